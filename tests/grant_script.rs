//! `sql/grant-managed-identity.sql` against the statements the copier sends.
//!
//! Why it exists: the grant script is T-SQL that no test double runs, and a least-privileged
//! login is exactly where a statement that reads one more object fails (Msg 229) — on the
//! customer's server, not here. So every `sys.*` / `cdc.*` object and every templated name
//! (`{table}`, `{watermark}`, `cdc.{function}`) in `src/sqlserver/sql.rs` must be accounted
//! for in the script, the script must grant nothing schema-wide, and every name it splices
//! into dynamic SQL must pass through `QUOTENAME`. The live suite's
//! `least_privilege::live_product_runs_as_a_least_privileged_login` runs the script on SQL
//! Server; this file keeps it honest offline.

use std::collections::BTreeSet;

const STATEMENTS: &str = include_str!("../src/sqlserver/sql.rs");
const GRANT_SCRIPT: &str = include_str!("../sql/grant-managed-identity.sql");
const DEPLOY_DOC: &str = include_str!("../docs/deploy.md");

/// The product part of `sql.rs` (its unit tests quote example names).
fn product_statements() -> &'static str {
    STATEMENTS
        .split("#[cfg(test)]")
        .next()
        .expect("sql.rs has text")
}

/// Every `sys.<name>` / `cdc.<name>` in `text`, brackets dropped, templates kept as written
/// (`cdc.{function}`).
fn objects(text: &str) -> BTreeSet<String> {
    let text = &text.replace("[sys].", "sys.").replace("[cdc].", "cdc.");
    let mut found = BTreeSet::new();
    for schema in ["sys.", "cdc."] {
        for (at, _) in text.match_indices(schema) {
            let preceded_by_name = text[..at]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
            if preceded_by_name {
                continue; // `ct.capture_instance`, `crate::cdc.` and the like
            }
            let name: String = text[at + schema.len()..]
                .chars()
                .skip_while(|&c| c == '[')
                .take_while(|&c| c.is_ascii_alphanumeric() || c == '_' || c == '{' || c == '}')
                .collect();
            if !name.is_empty() {
                found.insert(format!("{schema}{name}"));
            }
        }
    }
    found
}

/// `text` with every `QUOTENAME(...)` call (nested parentheses included) removed.
fn without_quotename(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("QUOTENAME(") {
        out.push_str(&rest[..at]);
        let mut depth = 0;
        let mut end = rest.len();
        for (i, c) in rest[at..].char_indices() {
            match c {
                '(' => depth += 1,
                ')' => {
                    depth -= 1;
                    if depth == 0 {
                        end = at + i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// The `@variables` an expression mentions.
fn variables(expression: &str) -> BTreeSet<String> {
    expression
        .match_indices('@')
        .map(|(at, _)| {
            expression[at..]
                .chars()
                .take_while(|&c| c == '@' || c.is_ascii_alphanumeric() || c == '_')
                .collect::<String>()
        })
        .filter(|v| v.len() > 1)
        .collect()
}

/// The T-SQL outside `/* … */` and `-- …` comments.
fn code_of(script: &str) -> String {
    let mut code = String::new();
    let mut rest = script;
    while let Some(at) = rest.find("/*") {
        code.push_str(&rest[..at]);
        rest = rest[at..].split_once("*/").map_or("", |(_, after)| after);
    }
    code.push_str(rest);
    code.lines()
        .map(|line| line.split_once("--").map_or(line, |(before, _)| before))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn object_scanner_finds_the_names_statements_use() {
    let cases: &[(&str, &[&str])] = &[
        (
            "SELECT sys.fn_cdc_get_max_lsn() AS max_lsn;",
            &["sys.fn_cdc_get_max_lsn"],
        ),
        (
            "FROM cdc.change_tables AS ct JOIN sys.tables AS t ON ct.source_object_id = t.object_id",
            &["cdc.change_tables", "sys.tables"],
        ),
        (
            "SELECT * FROM cdc.{function}(@P1) ORDER BY x",
            &["cdc.{function}"],
        ),
        (
            "FROM [sys].[columns] AS c, cdc.[captured_columns] AS cc",
            &["cdc.captured_columns", "sys.columns"],
        ),
        ("use crate::cdc::TableRef; ct.capture_instance", &[]),
    ];
    for (text, want) in cases {
        let want: BTreeSet<String> = want.iter().map(|s| s.to_string()).collect();
        assert_eq!(objects(text), want, "{text}");
    }
}

#[test]
fn every_object_the_statements_read_is_covered_by_the_grant_script() {
    let read = objects(product_statements());
    assert!(
        read.contains("sys.fn_cdc_get_max_lsn") && read.contains("cdc.change_tables"),
        "the scanner found the statements: {read:?}"
    );
    // A templated name is covered by the grant that the script builds for it (each change
    // function `cdc.{function}` stands for is checked by name in
    // `every_change_function_the_statements_call_is_granted_per_instance`).
    let templated: &[(&str, &str)] = &[
        (
            "cdc.{function}",
            "N'GRANT SELECT ON OBJECT::[cdc].' + QUOTENAME(@net_changes)",
        ),
        ("{table}", "N' (' + @columns + N') TO ' + @grantee"),
        (
            "{watermark}",
            "N'GRANT SELECT, INSERT, UPDATE ON OBJECT::' + @watermark",
        ),
        (
            "{ranges}",
            "N'GRANT SELECT, INSERT, UPDATE, DELETE ON OBJECT::' + @ranges",
        ),
    ];
    let code = code_of(GRANT_SCRIPT);
    for (placeholder, grant) in templated {
        if product_statements().contains(placeholder) {
            assert!(
                code.contains(grant),
                "{placeholder} is read by a statement but the grant script has no `{grant}`"
            );
        }
    }
    let missing: Vec<&String> = read
        .iter()
        .filter(|o| o.as_str() != "cdc.{function}")
        .filter(|o| !GRANT_SCRIPT.contains(o.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "statements in src/sqlserver/sql.rs read {missing:?}, which sql/grant-managed-identity.sql \
         neither grants nor lists (in its table of what covers each object, with the Microsoft page)"
    );
}

/// The function-name prefixes the builders in `sql.rs` splice a capture instance into (the
/// string literals `"fn_cdc_get_net_changes_{capture_instance}"` and the like).
fn change_function_prefixes() -> BTreeSet<String> {
    product_statements()
        .match_indices("\"fn_cdc_get_")
        .map(|(at, _)| {
            product_statements()[at + 1..]
                .chars()
                .take_while(|&c| c != '{')
                .collect()
        })
        .collect()
}

/// The statement of `code` that starts at `start` (up to its `;`).
fn statement_at<'a>(code: &'a str, start: &str) -> &'a str {
    let at = code.find(start).unwrap_or_else(|| panic!("no `{start}`"));
    code[at..].split(';').next().unwrap_or_default()
}

/// Issue 10: a keyless table is read from `cdc.fn_cdc_get_all_changes_<ci>`, which every
/// instance has; `cdc.fn_cdc_get_net_changes_<ci>` exists only with net changes. Each change
/// function a statement calls is granted per instance under its own name, the net-changes
/// one only where it exists (so a table without a key does not stop the script), and a
/// missing all-changes function stops it with a message.
#[test]
fn every_change_function_the_statements_call_is_granted_per_instance() {
    let prefixes = change_function_prefixes();
    let want: BTreeSet<String> = ["fn_cdc_get_all_changes_", "fn_cdc_get_net_changes_"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(prefixes, want, "the change functions the builders name");
    let code = code_of(GRANT_SCRIPT);
    for (prefix, variable) in [
        ("fn_cdc_get_all_changes_", "@all_changes"),
        ("fn_cdc_get_net_changes_", "@net_changes"),
    ] {
        assert!(
            code.contains(&format!("SET {variable} = N'{prefix}' + @name;")),
            "{prefix}<ci> is built from the instance name into {variable}"
        );
        let grant = format!(
            "SET @sql = N'GRANT SELECT ON OBJECT::[cdc].' + QUOTENAME({variable}) + N' TO ' + @grantee + N';';"
        );
        let at = code.find(&grant).unwrap_or_else(|| panic!("no `{grant}`"));
        let cursor_at = code[..at].rfind("CURSOR").expect("inside a cursor loop");
        assert!(
            code[cursor_at..at].contains("FROM @instances"),
            "{prefix}<ci> is granted for every instance in @instances"
        );
        let guard = format!("IF OBJECT_ID(N'[cdc].' + QUOTENAME({variable}))");
        let guarded = code[..at]
            .rfind(&guard)
            .expect("the grant checks the function exists");
        let between = &code[guarded..at];
        match variable {
            "@net_changes" => assert!(
                between.contains("IS NOT NULL") && !between.contains("THROW"),
                "no net-changes function (a table without a key) is skipped, not an error"
            ),
            _ => assert!(
                between.contains("IS NULL") && between.contains("THROW 50000"),
                "a missing all-changes function stops the script with a message"
            ),
        }
    }
}

/// Issue 10: during a switch the copier reads the instance its watermark names and then the
/// new one, so every instance of a configured table is granted even when CDC_TABLES pins
/// one; the pinned name must still exist. The captured columns granted are those the table
/// still has (an older instance keeps listing a dropped column, which GRANT would refuse).
#[test]
fn every_capture_instance_of_a_configured_table_is_granted_and_dropped_columns_are_not() {
    let code = code_of(GRANT_SCRIPT);
    let insert = statement_at(&code, "INSERT @instances");
    assert!(
        insert.contains("WHERE ct.source_object_id IN (SELECT c.object_id FROM @config AS c)"),
        "{insert}"
    );
    assert!(
        !insert.contains("capture_instance ="),
        "the pin does not narrow the grants: {insert}"
    );
    let pinned = statement_at(&code, "SELECT TOP (1) @entry = c.entry FROM @config AS c");
    assert!(
        pinned.contains("c.capture_instance IS NULL OR i.capture_instance = c.capture_instance"),
        "a pinned instance must exist: {pinned}"
    );
    let columns = statement_at(&code, "SELECT @columns = STRING_AGG");
    assert!(
        columns.contains(
            "JOIN sys.columns AS c ON c.object_id = i.object_id AND c.name = cc.column_name"
        ),
        "{columns}"
    );
    assert!(code.contains("N'GRANT SELECT ON OBJECT::[cdc].[ddl_history] TO ' + @grantee"));
    // CAPTURE_INSTANCES types the captured columns from the change table's sys.columns rows,
    // visible only with a permission on the change table: metadata, not its rows.
    assert!(cdc_copy::sqlserver::sql::CAPTURE_INSTANCES
        .contains("LEFT JOIN sys.columns AS c ON c.object_id = ct.object_id"));
    assert!(code.contains(
        "N'GRANT VIEW DEFINITION ON OBJECT::[cdc].' + QUOTENAME(@change_table) + N' TO ' + @grantee"
    ));
    assert!(!code.contains("GRANT SELECT ON OBJECT::[cdc].' + QUOTENAME(@change_table)"));
    assert!(GRANT_SCRIPT.contains("| cdc.fn_cdc_get_all_changes_<ci>"));
    assert!(GRANT_SCRIPT.contains("WITH (TABLOCK, HOLDLOCK)"));
}

#[test]
fn the_grant_script_grants_nothing_schema_wide_and_no_broad_roles() {
    let code = code_of(GRANT_SCRIPT).to_ascii_uppercase();
    for line in code.lines().filter(|l| l.contains("GRANT ")) {
        assert!(
            !line.contains("SCHEMA::"),
            "a schema-wide grant covers every change table: {line}"
        );
    }
    for role in ["DB_DATAREADER", "DB_OWNER", "DB_DATAWRITER"] {
        assert!(
            !code.contains(&format!("ALTER ROLE {role} ADD MEMBER")),
            "{role}"
        );
    }
    // Gating roles are joined only for the configured capture instances (@instances).
    let adds: Vec<&str> = code.match_indices("ADD MEMBER").map(|_| "").collect();
    assert_eq!(adds.len(), 1, "one place adds role members");
    let add_at = code.find("ADD MEMBER").unwrap();
    let cursor_at = code[..add_at]
        .rfind("CURSOR")
        .expect("inside a cursor loop");
    assert!(
        code[cursor_at..add_at].contains("FROM @INSTANCES"),
        "roles come from the configured instances"
    );
}

#[test]
fn the_grant_script_splices_names_only_through_quotename() {
    let code = code_of(GRANT_SCRIPT);
    // Variables that hold text already quoted (checked where they are built, below).
    let quoted = ["@sql", "@grantee", "@watermark", "@ranges", "@columns"];
    for (name, definition) in [
        ("@grantee", "@grantee nvarchar(258) = QUOTENAME(@principal);"),
        (
            "@watermark",
            "@watermark nvarchar(600) = QUOTENAME(@watermark_schema) + N'.' + QUOTENAME(@watermark_table);",
        ),
        (
            "@ranges",
            "@ranges nvarchar(600) = QUOTENAME(@watermark_schema) + N'.' + QUOTENAME(@watermark_table + N'_range');",
        ),
        (
            "@columns",
            "@columns = STRING_AGG(CONVERT(nvarchar(max), QUOTENAME(cols.column_name)), N', ')",
        ),
    ] {
        assert!(code.contains(definition), "{name} is built as `{definition}`");
    }
    let mut checked = 0;
    for statement in code.split("SET @sql =").skip(1) {
        let expression = statement.split(';').next().unwrap_or_default();
        let unquoted: Vec<String> = variables(&without_quotename(expression))
            .into_iter()
            .filter(|v| !quoted.contains(&v.as_str()))
            .collect();
        assert!(
            unquoted.is_empty(),
            "dynamic SQL splices {unquoted:?} without QUOTENAME: {expression}"
        );
        checked += 1;
    }
    assert!(checked >= 10, "found only {checked} dynamic statements");
    // Dynamic SQL runs only through sp_executesql with the checked @sql.
    for line in code.lines().filter(|l| l.contains("EXEC")) {
        assert_eq!(line.trim(), "EXEC sys.sp_executesql @sql;", "{line}");
    }
}

#[test]
fn the_grant_script_is_one_batch_whose_inputs_the_deploy_guide_passes() {
    assert!(
        !GRANT_SCRIPT
            .lines()
            .any(|l| l.trim().eq_ignore_ascii_case("GO")),
        "one batch: its DECLAREd inputs must reach every step (and the live suite sends it whole)"
    );
    let inputs: BTreeSet<String> = GRANT_SCRIPT
        .match_indices("$(")
        .map(|(at, _)| {
            GRANT_SCRIPT[at + 2..]
                .chars()
                .take_while(|&c| c != ')')
                .collect()
        })
        .collect();
    let want: BTreeSet<String> = ["IDENTITY_NAME", "CDC_TABLES", "CDC_WATERMARK_TABLE"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(inputs, want, "sqlcmd variables of the script");
    for input in &inputs {
        assert!(
            DEPLOY_DOC.contains(&format!("{input}=")),
            "docs/deploy.md runs the script without -v {input}=…"
        );
        assert!(
            GRANT_SCRIPT.contains(&format!("{input}=")),
            "the script's own usage line passes {input}"
        );
    }
}

#[test]
fn quotename_stripping_and_variable_scan() {
    assert_eq!(
        without_quotename("N'x' + QUOTENAME(OBJECT_NAME(@id)) + N' TO ' + @grantee"),
        "N'x' +  + N' TO ' + @grantee"
    );
    assert_eq!(
        variables("N'a' + @grantee + N';' + @b_2"),
        ["@b_2", "@grantee"].into_iter().map(String::from).collect()
    );
    assert_eq!(
        code_of("/* $(X) */ SELECT 1; -- note\nSELECT 2;"),
        " SELECT 1; \nSELECT 2;"
    );
}

#[test]
fn permission_errors_point_at_the_grant_script() {
    for number in [229, 230, 297, 300] {
        let message = cdc_copy::sqlserver::connection::sql_error(number, "denied.").to_string();
        assert!(
            message.contains("sql/grant-managed-identity.sql") && message.contains("CDC_TABLES"),
            "Msg {number}: {message}"
        );
        assert!(
            !message.contains("cdc schema"),
            "the schema-wide grant is gone: {message}"
        );
    }
}
