"""Runs the snippets of docs/reading-the-files.md, exactly as documented, on the files
tests/readers.rs wrote (target/readers/cases.json says where) and checks every value.

Each snippet is the code block after its `<!-- snippet: NAME -->` marker. Every tool's result
is turned into Arrow and each value into canonical text (the same text the Rust side wrote as
expected: see tests/readers.rs), column by column. The matrices tool x column it prints, one
for CSV and one for Parquet, must equal the ones between the doc's `matrix:` and
`parquet-matrix:` markers, so a value that stops (or starts) being exact fails the test until
the doc says so. `--update-doc` rewrites those tables. A Parquet `datetimeoffset` struct is
compared as its instant and its offset; a Parquet `uniqueidentifier` (16 bytes, RFC 4122
order) as the text those bytes spell.
"""

import datetime
import json
import os
import re
import sys
import uuid
from decimal import Decimal
from pathlib import Path

import pyarrow as pa

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "reading-the-files.md"
CASES = Path(os.environ.get("CDC_READERS_DIR", ROOT / "target" / "readers")) / "cases.json"
EPOCH = datetime.datetime(1970, 1, 1)


def snippets():
    text = DOC.read_text(encoding="utf-8")
    found = {}
    for m in re.finditer(r"<!-- snippet: ([\w-]+) -->\n```python\n(.*?)```", text, re.S):
        found[m.group(1)] = m.group(2)
    return found


def run(code_names, inputs):
    """Runs the named snippets in one namespace seeded with `inputs`; returns it."""
    namespace = dict(inputs)
    for name in code_names:
        exec(compile(SNIPPETS[name], f"{DOC.name}:{name}", "exec"), namespace)
    return namespace


def to_arrow(result):
    if isinstance(result, pa.Table):
        return result
    for method in ("to_arrow_table", "to_arrow"):  # DuckDB relation, polars frame
        if hasattr(result, method):
            table = getattr(result, method)()
            return table.read_all() if hasattr(table, "read_all") else table
    if hasattr(result, "toArrow"):  # Spark
        return result.toArrow()
    import pandas as pd

    if isinstance(result, pd.DataFrame):
        return pa.Table.from_pandas(result, preserve_index=False)
    raise TypeError(f"cannot turn {type(result)} into Arrow")


def fraction7(whole_us, extra_ns=0):
    """`HH:MM:SS.fffffff` parts from microseconds and the nanoseconds below them."""
    return f"{whole_us:06d}{extra_ns // 100}"


def offset_struct(t):
    """A Parquet `datetimeoffset`: struct {utc: timestamp (UTC), offset_minutes}."""
    return pa.types.is_struct(t) and [t.field(i).name for i in range(t.num_fields)] == ["utc", "offset_minutes"]


def canonical_column(array):
    """Canonical text of every value of an Arrow array (None for NULL); a `datetimeoffset`
    struct is its UTC instant (its offset is compared on its own, in `compare`)."""
    t = array.type
    if offset_struct(t):
        utc = canonical_column(array.field("utc"))
        return [None if valid is False else u for u, valid in zip(utc, array.is_valid().to_pylist())]
    if pa.types.is_timestamp(t) or pa.types.is_time(t):
        per_ns = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}[t.unit]
        ints = array.cast(pa.int64()).to_pylist()
        out = []
        for v in ints:
            if v is None:
                out.append(None)
                continue
            ns = v * per_ns
            us, rest = divmod(ns, 1000)
            if pa.types.is_time(t):
                secs, frac = divmod(us, 10**6)
                text = f"{secs // 3600:02d}:{secs // 60 % 60:02d}:{secs % 60:02d}.{fraction7(frac, rest)}"
            else:
                d = EPOCH + datetime.timedelta(microseconds=us)
                text = (f"{d.year:04d}-{d.month:02d}-{d.day:02d}T{d.hour:02d}:{d.minute:02d}:"
                        f"{d.second:02d}.{fraction7(d.microsecond, rest)}")
                if t.tz is not None:
                    text += "Z"
            out.append(text)
        return out
    values = array.to_pylist()
    return [None if v is None else canonical(v) for v in values]


def canonical(v):
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, Decimal):
        return format(v, "f")
    if isinstance(v, (bytes, bytearray)):
        return bytes(v).hex()
    if isinstance(v, uuid.UUID):
        return str(v).upper()
    if isinstance(v, datetime.date):
        return v.isoformat()
    return str(v)


def expected_text(column, value):
    if value is None:
        return None
    if column["type_name"] in ("float", "real"):
        return repr(float(value))
    if column["type_name"] == "uniqueidentifier":
        return value.upper()
    return value


def compare(table, schema, case):
    """{column: None when exact, else 'row i: expected X, got Y'}."""
    columns = schema["cdc_columns"] + schema["columns"]
    result = {}
    for c in columns:
        name = c["name"]
        if name not in table.column_names:
            result[name] = "column missing"
            continue
        array = table.column(name).combine_chunks()
        got = canonical_column(array)
        if c["type_name"] == "uniqueidentifier":
            # Parquet's FixedSizeBinary(16) in RFC 4122 order: the bytes the text spells.
            got = [None if g is None else str(uuid.UUID(g)) if re.fullmatch(r"[0-9a-f]{32}", g) else g
                   for g in got]
            got = [None if g is None else g.upper() for g in got]
        want = [expected_text(c, v) for v in case["expected"][name]]
        diff = next(((i, w, g) for i, (w, g) in enumerate(zip(want, got)) if w != g), None)
        if not diff and offset_struct(array.type):
            # The offset too: Parquet keeps it (`utc + offset_minutes` is the local time).
            offsets = array.field("offset_minutes").to_pylist()
            valid = array.is_valid().to_pylist()
            wanted = case["expected_offset_minutes"][name]
            diff = next(((i, f"offset {w}", f"offset {g}") for i, (w, g, v) in
                         enumerate(zip(wanted, offsets, valid)) if v and w != g), None)
        if len(got) != len(want):
            result[name] = f"{len(got)} rows, expected {len(want)}"
        elif diff:
            i, w, g = diff
            def shorten(s):
                if s is None:
                    return "NULL"
                s = s.replace("\r", "\\r").replace("\n", "\\n")
                return s if len(s) < 40 else s[:37] + "..."

            result[name] = f"no: row {i} `{shorten(w)}` read as `{shorten(g)}`"
        else:
            result[name] = None
    return result


def check_upsert(case, fmt):
    """The documented upsert on the CSV (`duckdb-csv`) or Parquet (`duckdb-parquet`) files."""
    prefix = "" if fmt == "csv" else "parquet_"
    inputs = {"schema_file": case[prefix + "schema_file"], "csv_files": [], "parquet_files": []}
    files = fmt + "_files"
    ns = run([f"duckdb-{fmt}"], {**inputs, files: case[prefix + "full_load_files"], "full_load": True})
    loaded = ns["table"]
    ns = run([f"duckdb-{fmt}"], {**inputs, files: case[files], "full_load": False})
    ns = run(["duckdb-upsert"], {**ns, "loaded": loaded, "changes": ns["table"]})
    rows = ns["duckdb"].sql("SELECT * FROM customers ORDER BY customer_id").fetchall()
    got = [list(r) for r in rows]
    if got != case["expected"]:
        return f"expected {case['expected']}, got {got}"
    return None


def check_footer(case):
    """The Parquet footer's key/value metadata carries the blob metadata (and Arrow's schema)."""
    import pyarrow.parquet as pq

    footer = {k.decode(): v.decode() for k, v in pq.read_metadata(case["parquet_files"][0]).metadata.items()
              if k != b"ARROW:schema"}
    want = case["parquet_blob_metadata"]
    return None if footer == want else f"footer {footer}, blob {want}"


def check_parquet_files(case):
    """Each Parquet snippet on the two windows of the upsert table: all rows, in file order."""
    results = {}
    want = [bytes.fromhex(f"0000002a000001f0000{n}") for n in range(1, 7)]
    for tool, name in [("DuckDB", "duckdb-parquet"), ("pyarrow", "pyarrow-parquet"),
                       ("pandas", "pandas-parquet"), ("polars", "polars-parquet")]:
        try:
            ns = run([name], {"parquet_files": case["parquet_files"]})
            table = to_arrow(ns["df"] if name.startswith("pandas") else ns["table"])
            got = table.column("__$start_lsn").to_pylist()
            results[tool] = None if got == want else f"LSNs {[g.hex() for g in got]}"
        except Exception as e:
            results[tool] = f"snippet failed: {type(e).__name__}: {str(e).splitlines()[0][:120]}"
    return results


def matrix_markdown(tools, columns, results):
    lines = ["| column | SQL type | " + " | ".join(tools) + " |", "|---|---|" + "---|" * len(tools)]
    for c in columns:
        cells = []
        for tool in tools:
            problem = results[tool].get(c["name"]) if isinstance(results[tool], dict) else results[tool]
            cells.append("exact" if problem is None else problem.replace("|", "\\|"))
        lines.append(f"| `{c['name']}` | `{c['sql_type']}` | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def read_all(tools, inputs, case, schema):
    """{tool: compare(...) or the snippet's failure} for each tool's snippets."""
    results = {}
    for tool, names in tools.items():
        try:
            ns = run(names, inputs)
            result = ns["df"] if names[-1].startswith("pandas") else ns["table"]
            results[tool] = compare(to_arrow(result), schema, case)
        except Exception as e:  # a snippet that fails is a result too
            results[tool] = f"snippet failed: {type(e).__name__}: {str(e).splitlines()[0][:120]}"
    return results


def main():
    cases = json.loads(CASES.read_text())
    case = cases["every_type"]
    schema = json.load(open(case["schema_file"]))
    columns = schema["cdc_columns"] + schema["columns"]
    versions = ", ".join(f"{t} {__import__(m).__version__}" for t, m in
                         [("DuckDB", "duckdb"), ("pyarrow", "pyarrow"), ("pandas", "pandas"), ("polars", "polars")])
    spark = os.environ.get("CDC_READERS_SPARK") == "1"
    formats = {
        "csv": ({"DuckDB": ["duckdb-csv"], "pyarrow": ["pyarrow-csv"], "pandas": ["pyarrow-csv", "pandas-csv"],
                 "polars": ["polars-csv"], **({"Spark": ["spark-csv"]} if spark else {})},
                {"schema_file": case["schema_file"], "csv_files": case["csv_files"], "parquet_files": [],
                 "full_load": False}),
        "parquet": ({"DuckDB": ["duckdb-parquet"], "pyarrow": ["pyarrow-parquet"], "pandas": ["pandas-parquet"],
                     "polars": ["polars-parquet"]},  # Spark: CSV only (no Parquet snippet tested)
                    {"schema_file": case["parquet_schema_file"], "csv_files": [],
                     "parquet_files": case["parquet_files"], "full_load": False}),
    }
    failures = []
    doc = DOC.read_text(encoding="utf-8")
    exact = cells = 0
    for fmt, (tools, inputs) in formats.items():
        results = read_all(tools, inputs, case, schema)
        table = matrix_markdown(list(tools), columns, results)
        print(f"{fmt.upper() if fmt == 'csv' else 'Parquet'}, tool x column ({versions}):")
        print(table)
        cells += len(columns) * len(tools)
        exact += sum(1 for r in results.values() if isinstance(r, dict) for v in r.values() if v is None)
        marker = "matrix" if fmt == "csv" else "parquet-matrix"
        begin, end = f"<!-- {marker}: begin -->\n", f"<!-- {marker}: end -->"
        documented = doc[doc.index(begin) + len(begin):doc.index(end)]
        if not (spark and fmt == "csv") and documented != table:
            if "--update-doc" in sys.argv:
                doc = doc.replace(begin + documented, begin + table)
                DOC.write_text(doc, encoding="utf-8")
                print(f"updated the {marker} in {DOC}")
            else:
                failures.append(f"the {fmt} matrix above differs from the one in {DOC.relative_to(ROOT)} "
                                "(run scripts/check-readers.sh --update-doc and explain each change there)")

    footer = check_footer(case)
    print("Parquet footer key/value metadata = blob metadata:", "exact" if footer is None else footer)
    if footer:
        failures.append(f"footer: {footer}")
    for tool, problem in check_parquet_files(cases["upsert"]).items():
        print(f"{tool} Parquet snippet on two files of a table:", "exact" if problem is None else problem)
        if problem:
            failures.append(f"{tool} on two Parquet files: {problem}")

    for fmt in ("csv", "parquet"):
        try:
            upsert = check_upsert(cases["upsert"], fmt)
        except Exception as e:
            upsert = f"snippet failed: {type(e).__name__}: {str(e).splitlines()[0][:120]}"
        print(f"DuckDB upsert of a full load and two windows ({fmt}):", "exact" if upsert is None else upsert)
        if upsert:
            failures.append(f"upsert ({fmt}): {upsert}")

    print(f"{exact} of {cells} tool x column cells exact; the others are documented in "
          f"{DOC.relative_to(ROOT)}")
    for f in failures:
        print("FAIL", f)
    sys.exit(1 if failures else 0)


SNIPPETS = snippets()

if __name__ == "__main__":
    main()
