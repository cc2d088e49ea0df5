//! The customers-shaped rows the benchmarks encode, from one deterministic generator.
//!
//! Both benches (`csv_encode`, `pipeline`) and the model's generated table in the pipeline
//! bench take their rows from here, so every scenario encodes the same bytes and the figures in
//! `docs/benchmarks.md` (about 64 bytes of CSV per row) stay comparable across them and over
//! time: change the lists or the email format only together with those figures. The shape is
//! the sample table of `sql/setup.sql` (`customer_id` int, `first_name`, `last_name`, `email`
//! varchar, `city` nvarchar); some values need CSV quoting (a comma), some are multi-byte
//! UTF-8, and every 7th city is NULL. The job tests' generator (`tests/common/cdc.rs`) is a
//! different one on purpose: it makes the awkward text (quotes, newlines, `""`) the oracle
//! must survive, not realistic sizes.

use cdc_copy::cdc::Value;

/// The customers table's columns, in row order.
pub const COLUMNS: &[&str] = &["customer_id", "first_name", "last_name", "email", "city"];
const FIRST: &[&str] = &[
    "Ada", "Grace", "Alan", "Edsger", "Barbara", "Ken", "Frances", "Donald", "Margaret",
];
const LAST: &[&str] = &[
    "Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Thompson", "Allen", "Knuth", "O'Neil",
    "Hamilton", "Smith",
];
/// Some need quoting (comma), some are multi-byte UTF-8 (nvarchar).
const CITY: &[&str] = &[
    "Seattle",
    "Zürich",
    "東京",
    "São Paulo",
    "New York",
    "Kraków",
    "Washington, D.C.",
    "London",
];

/// `first.last<i>@example.com`, lower case, apostrophes dropped.
fn push_email(email: &mut String, first: &str, last: &str, i: u64) {
    for part in [first, ".", last] {
        email.extend(
            part.chars()
                .filter(|c| *c != '\'')
                .map(|c| c.to_ascii_lowercase()),
        );
    }
    email.push_str(itoa::Buffer::new().format(i));
    email.push_str("@example.com");
}

/// Customer `i`: customer_id int (i + 1, strictly increasing), first_name, last_name and email
/// varchar, city nvarchar (NULL for every 7th row).
pub fn customer(i: u64) -> Vec<Value> {
    let first = FIRST[(i % FIRST.len() as u64) as usize];
    let last = LAST[(i / 3 % LAST.len() as u64) as usize];
    let mut email = String::with_capacity(first.len() + last.len() + 32);
    push_email(&mut email, first, last, i);
    let city = if i % 7 == 6 {
        Value::Null
    } else {
        Value::Text(CITY[(i % CITY.len() as u64) as usize].to_string())
    };
    vec![
        Value::Int(i as i64 + 1),
        Value::Text(first.to_string()),
        Value::Text(last.to_string()),
        Value::Text(email),
        city,
    ]
}

/// [`COLUMNS`] with the declarations of `sql/setup.sql`'s sample table, as a capture instance
/// reports them: the file's columns of a full-load part.
pub fn column_descs() -> std::sync::Arc<[cdc_copy::cdc::ColumnDesc]> {
    use cdc_copy::cdc::{ColumnDesc, ColumnType, Length};
    let ci_as = "SQL_Latin1_General_CP1_CI_AS";
    vec![
        ColumnDesc::new("customer_id", ColumnType::Int, false),
        ColumnDesc::new("first_name", ColumnType::VarChar(Length::Of(50)), false)
            .with_collation(ci_as),
        ColumnDesc::new("last_name", ColumnType::VarChar(Length::Of(50)), false)
            .with_collation(ci_as),
        ColumnDesc::new("email", ColumnType::VarChar(Length::Of(100)), false).with_collation(ci_as),
        ColumnDesc::new("city", ColumnType::NVarChar(Length::Of(60)), true).with_collation(ci_as),
    ]
    .into()
}

/// [`COLUMNS`] as owned names, as the row sinks and the model take them.
pub fn column_names() -> Vec<String> {
    COLUMNS.iter().map(|c| c.to_string()).collect()
}

/// Overwrites `batch` with customers `start..end`, reusing its rows' strings: the stand-in
/// for the source hands rows over without an allocation per field, so the sink scenarios
/// measure the sink, not `malloc`. Produces exactly the values of [`customer`].
pub fn fill_batch(batch: &mut Vec<Vec<Value>>, start: u64, end: u64) {
    let n = (end - start) as usize;
    batch.resize_with(n, || customer(0));
    for (row, i) in batch.iter_mut().zip(start..end) {
        fill_customer(row, i);
    }
}

/// Overwrites one row (five values, as [`customer`] makes) with customer `i`, reusing its
/// strings.
pub fn fill_customer(row: &mut [Value], i: u64) {
    fn set(v: &mut Value, parts: &[&str]) {
        if !matches!(v, Value::Text(_)) {
            *v = Value::Text(String::new());
        }
        if let Value::Text(s) = v {
            s.clear();
            for p in parts {
                s.push_str(p);
            }
        }
    }
    let first = FIRST[(i % FIRST.len() as u64) as usize];
    let last = LAST[(i / 3 % LAST.len() as u64) as usize];
    row[0] = Value::Int(i as i64 + 1);
    set(&mut row[1], &[first]);
    set(&mut row[2], &[last]);
    if !matches!(row[3], Value::Text(_)) {
        row[3] = Value::Text(String::new());
    }
    if let Value::Text(email) = &mut row[3] {
        email.clear();
        push_email(email, first, last, i);
    }
    if i % 7 == 6 {
        row[4] = Value::Null;
    } else {
        set(&mut row[4], &[CITY[(i % CITY.len() as u64) as usize]]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fill_batch_produces_the_rows_of_customer() {
        let mut batch = Vec::new();
        fill_batch(&mut batch, 0, 100);
        // Refilled from another start: every string is overwritten, NULL cities included.
        fill_batch(&mut batch, 6, 106);
        assert_eq!(batch.len(), 100);
        for (row, i) in batch.iter().zip(6..) {
            assert_eq!(*row, customer(i), "row {i}");
        }
        assert_eq!(batch[0][4], Value::Null, "customer 6 has no city");
    }

    #[test]
    fn keys_increase_and_the_shape_matches_the_columns() {
        let rows: Vec<Vec<Value>> = (0..50).map(customer).collect();
        assert!(rows.iter().all(|r| r.len() == COLUMNS.len()));
        let keys: Vec<&Value> = rows.iter().map(|r| &r[0]).collect();
        assert_eq!(keys[0], &Value::Int(1));
        assert!(rows.windows(2).all(|w| match (&w[0][0], &w[1][0]) {
            (Value::Int(a), Value::Int(b)) => a < b,
            _ => false,
        }));
        assert_eq!(
            customer(0)[3],
            Value::Text("ada.lovelace0@example.com".into())
        );
    }
}
