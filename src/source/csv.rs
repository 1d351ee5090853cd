//! CSV files (HR exports): a header row, UTF-8 with or without a BOM, a
//! configurable delimiter. Whole-file refusals (unreadable, too recently
//! modified, not UTF-8, missing or doubled column, ragged row) come from
//! here; everything about a record's meaning is the mapping's job.
//!
//! A file cannot always say who is absent: when its last line has no line
//! terminator, when it ends inside a quoted value, or when its size or
//! modification time changed while it was read, it may be cut short, so the
//! read says so ([`CsvRead::withheld`]) and the run deletes nothing. The
//! last row of a file cut short is refused (it may be cut inside a value).
//!
//! Rows where every field is empty (spreadsheets leave them) are not
//! records at the end of the file; amid the data, such a row is a refused
//! record that names no externalId (the mapping withholds deletes for it).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use super::SourceError;
use crate::directory::{Origin, SourceRecord, Withheld};

/// What one read of a file gave.
#[derive(Debug)]
pub struct CsvRead {
    /// One record per data row, in file order.
    pub records: Vec<SourceRecord>,
    /// Why this read cannot say who is absent, if it cannot.
    pub withheld: Vec<Withheld>,
}

const CUT_SHORT_ADVICE: &str =
    "the file may be truncated or still being written; write it elsewhere and rename it into place";

/// Reads `path` and returns one record per data row, holding the values of
/// `columns` (trimmed; empty cells absent). Every column in `columns` must be
/// in the header, once. With `min_age`, a file modified more recently than
/// that is refused.
pub fn read_records(
    path: &Path,
    delimiter: u8,
    columns: &[&str],
    min_age: Option<Duration>,
) -> Result<CsvRead, SourceError> {
    read_records_observed(path, delimiter, columns, min_age, &mut || {})
}

/// [`read_records`], calling `between` after the file is opened and looked
/// at and before it is read (a test writes to the file there).
fn read_records_observed(
    path: &Path,
    delimiter: u8,
    columns: &[&str],
    min_age: Option<Duration>,
    between: &mut dyn FnMut(),
) -> Result<CsvRead, SourceError> {
    let file: Arc<Path> = Arc::from(path);
    let (bytes, changed) = read_stable(path, min_age, between)?;
    let mut withheld = Vec::new();
    if let Some(cause) = changed {
        withheld.push(Withheld {
            origin: Origin::File { file: file.clone() },
            cause,
        });
    }
    let text = decode(path, &bytes)?;
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(true)
        .flexible(true)
        .from_reader(text.as_bytes());
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| csv_error(path, e))?
        .iter()
        .map(|h| h.trim().to_owned())
        .collect();
    if headers.iter().all(String::is_empty) {
        return Err(SourceError::MissingHeader {
            path: path.to_path_buf(),
        });
    }
    let positions = column_positions(path, &headers, columns)?;

    let mut records = Vec::new();
    // Rows where every field is empty, not yet known to be trailing.
    let mut empty_rows: Vec<u64> = Vec::new();
    // The last row read: its first line, where it starts, whether it was empty.
    let mut last_row = (1u64, 0usize, false);
    let mut row = csv::StringRecord::new();
    loop {
        match reader.read_record(&mut row) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => return Err(csv_error(path, e)),
        }
        let (line, start) = row
            .position()
            .map_or((0, 0), |p| (p.line(), p.byte() as usize));
        let empty = row.iter().all(|f| f.trim().is_empty());
        last_row = (line, start, empty);
        if empty {
            empty_rows.push(line);
            continue;
        }
        if row.len() != headers.len() {
            return Err(SourceError::Ragged {
                path: path.to_path_buf(),
                line,
                expected: headers.len() as u64,
                found: row.len() as u64,
            });
        }
        // Empty rows followed by data are amid the data: refused records.
        for line in empty_rows.drain(..) {
            records.push(SourceRecord {
                origin: Origin::Line {
                    file: file.clone(),
                    line,
                },
                values: BTreeMap::new(),
                problem: Some(
                    "every field of the row is empty; amid the data it may be a record whose values were lost"
                        .to_owned(),
                ),
            });
        }
        let mut values = BTreeMap::new();
        for (column, index) in &positions {
            if let Some(v) = row.get(*index).map(str::trim).filter(|v| !v.is_empty()) {
                values.insert(column.clone(), v.to_owned());
            }
        }
        records.push(SourceRecord {
            origin: Origin::Line {
                file: file.clone(),
                line,
            },
            values,
            problem: None,
        });
    }
    // What is left in `empty_rows` trails the data: not records at all.

    let (line, start, empty) = last_row;
    let cut_short = if !text.ends_with(['\n', '\r']) {
        Some("the last line has no line terminator")
    } else if ends_inside_quotes(text.as_bytes().get(start..).unwrap_or_default(), delimiter) {
        Some("the file ends inside a quoted value")
    } else {
        None
    };
    if let Some(what) = cut_short {
        if !empty && line > 1 {
            if let Some(last) = records.last_mut() {
                last.problem = Some(format!("the row may be cut short: {what}"));
            }
        }
        withheld.push(Withheld {
            origin: Origin::Line { file, line },
            cause: format!("{what} ({CUT_SHORT_ADVICE})"),
        });
    }
    Ok(CsvRead { records, withheld })
}

/// Where each mapped column is. A column the mapping reads must be in the
/// header exactly once: with two, which one is meant is unknown.
fn column_positions(
    path: &Path,
    headers: &[String],
    columns: &[&str],
) -> Result<Vec<(Arc<str>, usize)>, SourceError> {
    let mut positions = Vec::with_capacity(columns.len());
    for column in columns {
        let mut found = headers
            .iter()
            .enumerate()
            .filter(|(_, h)| h == column)
            .map(|(i, _)| i);
        let index = found.next().ok_or_else(|| SourceError::MissingColumn {
            path: path.to_path_buf(),
            column: (*column).to_owned(),
            available: headers.to_vec(),
        })?;
        if let Some(second) = found.next() {
            return Err(SourceError::DuplicateColumn {
                path: path.to_path_buf(),
                column: (*column).to_owned(),
                first: index + 1,
                second: second + 1,
            });
        }
        positions.push((Arc::<str>::from(*column), index));
    }
    Ok(positions)
}

/// Reads the whole file, with what changed while it was read (size or
/// modification time), if anything did. With `min_age`, refuses a file
/// modified more recently than that.
fn read_stable(
    path: &Path,
    min_age: Option<Duration>,
    between: &mut dyn FnMut(),
) -> Result<(Vec<u8>, Option<String>), SourceError> {
    let read_error = |source| SourceError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mut f = std::fs::File::open(path).map_err(read_error)?;
    let before = f.metadata().map_err(read_error)?;
    if let Some(min_age) = min_age.filter(|a| !a.is_zero()) {
        let modified = before.modified().map_err(read_error)?;
        // A modification time in the future (a clock apart) counts as now.
        let age = SystemTime::now()
            .duration_since(modified)
            .unwrap_or(Duration::ZERO);
        if age < min_age {
            return Err(SourceError::TooRecent {
                path: path.to_path_buf(),
                age_secs: age.as_secs(),
                min_age_secs: min_age.as_secs(),
            });
        }
    }
    between();
    let mut bytes = Vec::with_capacity(usize::try_from(before.len()).unwrap_or(0) + 1);
    f.read_to_end(&mut bytes).map_err(read_error)?;
    let after = f.metadata().map_err(read_error)?;
    let mut changes = Vec::new();
    let read = bytes.len() as u64;
    if before.len() != after.len() || read != before.len() {
        changes.push(format!(
            "size {} -> {} bytes ({read} read)",
            before.len(),
            after.len()
        ));
    }
    if let (Ok(a), Ok(b)) = (before.modified(), after.modified()) {
        if a != b {
            changes.push("modification time changed".to_owned());
        }
    }
    let changed = (!changes.is_empty()).then(|| {
        format!(
            "the file changed while it was read ({}; it may be being written: write it elsewhere and rename it into place)",
            changes.join(", ")
        )
    });
    Ok((bytes, changed))
}

/// Whether `row` (from a row's start to the end of the file) ends inside a
/// quoted value, read the way the `csv` crate reads it (a quote opens a
/// value only at its start; `""` inside is a quote).
fn ends_inside_quotes(row: &[u8], delimiter: u8) -> bool {
    let mut in_quotes = false;
    let mut at_field_start = true;
    let mut i = 0;
    while i < row.len() {
        let b = row[i];
        if in_quotes {
            if b == b'"' {
                if row.get(i + 1) == Some(&b'"') {
                    i += 2;
                    continue;
                }
                in_quotes = false;
            }
        } else if b == b'"' && at_field_start {
            in_quotes = true;
            at_field_start = false;
        } else {
            at_field_start = b == delimiter || b == b'\n' || b == b'\r';
        }
        i += 1;
    }
    in_quotes
}

/// UTF-8, with or without a BOM. Anything else is refused with the line of
/// the first bad byte and a hint.
fn decode<'a>(path: &Path, bytes: &'a [u8]) -> Result<&'a str, SourceError> {
    if bytes.starts_with(&[0xFF, 0xFE]) || bytes.starts_with(&[0xFE, 0xFF]) {
        return Err(SourceError::Encoding {
            path: path.to_path_buf(),
            line: 1,
            message: "the file is UTF-16; save it as UTF-8".to_owned(),
        });
    }
    let body = bytes.strip_prefix(&[0xEF, 0xBB, 0xBF]).unwrap_or(bytes);
    std::str::from_utf8(body).map_err(|e| {
        let good = &body[..e.valid_up_to()];
        let line = good.iter().filter(|b| **b == b'\n').count() as u64 + 1;
        SourceError::Encoding {
            path: path.to_path_buf(),
            line,
            message: format!(
                "byte 0x{:02X} is not UTF-8 (Latin-1 or Windows-1252?); save the file as UTF-8",
                body[e.valid_up_to()]
            ),
        }
    })
}

fn csv_error(path: &Path, e: csv::Error) -> SourceError {
    let line = e.position().map(|p| p.line());
    match e.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => SourceError::Ragged {
            path: path.to_path_buf(),
            line: line.unwrap_or(0),
            expected: *expected_len,
            found: *len,
        },
        _ => SourceError::Csv {
            path: path.to_path_buf(),
            line,
            message: e.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(content: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, content).unwrap();
        f
    }

    fn read(f: &tempfile::NamedTempFile, columns: &[&str]) -> Result<CsvRead, SourceError> {
        read_records(f.path(), b',', columns, None)
    }

    fn records(f: &tempfile::NamedTempFile, columns: &[&str]) -> Vec<SourceRecord> {
        let read = read(f, columns).unwrap();
        assert!(read.withheld.is_empty(), "{:?}", read.withheld);
        read.records
    }

    fn line(f: &tempfile::NamedTempFile, line: u64) -> Origin {
        Origin::Line {
            file: f.path().into(),
            line,
        }
    }

    #[test]
    fn records_carry_physical_line_numbers_across_quoted_newlines() {
        let f = write(b"\xEF\xBB\xBFid,note,email\n1,\"two\nlines\",a@x.io\n2,,b@x.io\n");
        let records = records(&f, &["id", "email", "note"]);
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].origin, line(&f, 2));
        assert_eq!(records[1].origin, line(&f, 4));
        assert_eq!(records[0].get("note"), Some("two\nlines"));
        assert_eq!(records[1].get("note"), None, "empty cells are absent");
        assert_eq!(
            records[0].get("id"),
            Some("1"),
            "the BOM is not part of the first header"
        );
    }

    #[test]
    fn a_missing_column_refuses_the_file_and_lists_what_is_there() {
        let f = write(b"id,mail\n1,a@x.io\n");
        let err = read(&f, &["id", "email"]).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("column \"email\"") && text.contains("id, mail"),
            "{text}"
        );
    }

    #[test]
    fn a_header_naming_a_mapped_column_twice_is_an_error_naming_both() {
        let f = write(b"id,email,name,email\n1,a@x.io,Ann,b@x.io\n");
        let err = read(&f, &["id", "email"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}:1: the header names column \"email\" twice (columns 2 and 4); the mapping reads it, so which one is meant is unclear: rename or remove one",
                f.path().display()
            )
        );
        // A doubled column the mapping does not read, or empty header cells, are no matter.
        let f = write(b"id,note,email,note,,\n1,x,a@x.io,y,,\n");
        assert_eq!(records(&f, &["id", "email"]).len(), 1);
    }

    #[test]
    fn a_ragged_row_refuses_the_file_with_its_line() {
        let f = write(b"id,email\n1,a@x.io\n2\n");
        let err = read(&f, &["id"]).unwrap_err();
        assert!(
            matches!(
                err,
                SourceError::Ragged {
                    line: 3,
                    expected: 2,
                    found: 1,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn trailing_rows_with_every_field_empty_are_not_records() {
        let mut text = b"id,email,name\n1,a@x.io,Ann\n2,b@x.io,Bob\n".to_vec();
        for _ in 0..15 {
            text.extend_from_slice(b",,\n");
        }
        text.extend_from_slice(b" , ,\n\n");
        let f = write(&text);
        let records = records(&f, &["id", "email"]);
        assert_eq!(records.len(), 2);
        assert!(records.iter().all(|r| r.problem.is_none()));
    }

    #[test]
    fn an_empty_row_amid_the_data_is_a_record_with_a_problem() {
        let f = write(b"id,email,name\n1,a@x.io,Ann\n,,\n\"\",,\n3,c@x.io,Cy\n,,\n");
        let records = records(&f, &["id", "email"]);
        let shape: Vec<(Origin, bool)> = records
            .iter()
            .map(|r| (r.origin.clone(), r.problem.is_some()))
            .collect();
        assert_eq!(
            shape,
            [
                (line(&f, 2), false),
                (line(&f, 3), true),
                (line(&f, 4), true),
                (line(&f, 5), false)
            ]
        );
        assert!(records[1].values.is_empty());
        assert!(records[1]
            .problem
            .as_deref()
            .unwrap()
            .starts_with("every field of the row is empty"));
    }

    #[test]
    fn a_last_line_without_a_terminator_refuses_that_row_and_withholds_deletes() {
        let f = write(b"id,email,name\n1,a@x.io,Ann\n2,b@x.io,Bo");
        let read = read(&f, &["id", "email", "name"]).unwrap();
        assert_eq!(read.records.len(), 2);
        assert_eq!(read.records[0].problem, None);
        assert_eq!(
            read.records[1].problem.as_deref(),
            Some("the row may be cut short: the last line has no line terminator")
        );
        assert_eq!(read.withheld.len(), 1);
        assert_eq!(
            read.withheld[0].to_string(),
            format!(
                "{}:3: the last line has no line terminator (the file may be truncated or still being written; write it elsewhere and rename it into place)",
                f.path().display()
            )
        );
        // A CRLF file is terminated too.
        let f = write(b"id,email\r\n1,a@x.io\r\n");
        assert_eq!(records(&f, &["id"]).len(), 1);
    }

    #[test]
    fn a_file_ending_inside_a_quoted_value_is_cut_short_even_after_a_line_break() {
        let f = write(b"id,email,note\n1,a@x.io,ok\n2,b@x.io,\"first line\nsecond \"\"line\"\"\n");
        let read = read(&f, &["id", "email", "note"]).unwrap();
        assert_eq!(read.withheld.len(), 1, "{:?}", read.records);
        assert!(read.withheld[0]
            .cause
            .starts_with("the file ends inside a quoted value"));
        assert!(read.records[1].problem.is_some());
        assert_eq!(read.records[0].problem, None);
        // A closed quote, and quotes inside an unquoted value, are fine.
        let f = write(b"id,email,note\n1,a@x.io,\"a \"\"b\"\"\nc\"\n2,b@x.io,5\" disk\n");
        assert_eq!(records(&f, &["id", "note"]).len(), 2);
    }

    /// A file whose size or modification time changes between the look
    /// before the read and the look after it.
    fn changed_while_read(change: impl FnOnce(&Path)) -> CsvRead {
        let f = write(b"id,email\n1,a@x.io\n2,b@x.io\n");
        let path = f.path().to_path_buf();
        let mut change = Some(change);
        read_records_observed(f.path(), b',', &["id", "email"], None, &mut || {
            if let Some(change) = change.take() {
                change(&path);
            }
        })
        .unwrap()
    }

    #[test]
    fn a_csv_rewritten_while_read_deletes_nobody() {
        // Appended to while read (the exporter still writing).
        let read = changed_while_read(|path| {
            let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
            std::io::Write::write_all(&mut f, b"3,c@x.io\n").unwrap();
        });
        assert_eq!(read.withheld.len(), 1);
        let cause = &read.withheld[0].cause;
        assert!(
            cause.starts_with("the file changed while it was read (size 27 -> 36 bytes (36 read)"),
            "{cause}"
        );
        assert!(matches!(read.withheld[0].origin, Origin::File { .. }));
        // Rewritten in place with the same size: only the time tells.
        let read = changed_while_read(|path| {
            let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
            std::io::Write::write_all(&mut &f, b"id,email\n1,a@x.io\n9,z@x.io\n").unwrap();
            f.set_modified(SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000))
                .unwrap();
        });
        assert_eq!(read.withheld.len(), 1);
        assert!(
            read.withheld[0].cause.contains("modification time changed"),
            "{}",
            read.withheld[0].cause
        );
        // What this means for the run: the directory withholds deletes, and
        // the guard turns a plan's deletes into a reason (tests/it/lying_sources.rs).
        let unchanged = changed_while_read(|_| {});
        assert!(unchanged.withheld.is_empty());
    }

    #[test]
    fn a_file_modified_more_recently_than_min_age_is_refused() {
        let f = write(b"id\n1\n");
        let err = read_records(f.path(), b',', &["id"], Some(Duration::from_secs(60))).unwrap_err();
        assert!(
            matches!(err, SourceError::TooRecent { min_age_secs: 60, age_secs, .. } if age_secs < 60),
            "{err:?}"
        );
        f.as_file()
            .set_modified(SystemTime::now() - Duration::from_secs(120))
            .unwrap();
        assert!(read_records(f.path(), b',', &["id"], Some(Duration::from_secs(60))).is_ok());
    }

    #[test]
    fn latin1_is_refused_with_the_line_of_the_first_bad_byte() {
        let f = write(b"id,name\n1,Ann\n2,Jos\xE9\n");
        let err = read(&f, &["id"]).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(":3:") && text.contains("save the file as UTF-8"),
            "{text}"
        );
    }

    #[test]
    fn utf16_is_refused() {
        let f = write(b"\xFF\xFEi\0d\0");
        let err = read(&f, &["id"]).unwrap_err();
        assert!(err.to_string().contains("UTF-16"), "{err}");
    }

    #[test]
    fn another_delimiter_works() {
        let f = write(b"id;email\n1;a@x.io\n");
        let read = read_records(f.path(), b';', &["id", "email"], None).unwrap();
        assert_eq!(read.records[0].get("email"), Some("a@x.io"));
    }

    #[test]
    fn an_empty_file_has_no_header() {
        let f = write(b"");
        assert!(matches!(
            read(&f, &["id"]),
            Err(SourceError::MissingHeader { .. })
        ));
    }
}
