//! CSV files (HR exports): a header row, UTF-8 with or without a BOM, a
//! configurable delimiter. Whole-file refusals (unreadable, not UTF-8,
//! missing column, ragged row) come from here; everything about a record's
//! meaning is the mapping's job.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use super::SourceError;
use crate::directory::{Origin, SourceRecord};

/// Reads `path` and returns one record per data row, holding the values of
/// `columns` (trimmed; empty cells absent). Every column in `columns` must be
/// in the header.
pub fn read_records(
    path: &Path,
    delimiter: u8,
    columns: &[&str],
) -> Result<Vec<SourceRecord>, SourceError> {
    let bytes = std::fs::read(path).map_err(|source| SourceError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let text = decode(path, &bytes)?;
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(true)
        .flexible(false)
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
    let mut positions = Vec::with_capacity(columns.len());
    for column in columns {
        let index =
            headers
                .iter()
                .position(|h| h == column)
                .ok_or_else(|| SourceError::MissingColumn {
                    path: path.to_path_buf(),
                    column: (*column).to_owned(),
                    available: headers.clone(),
                })?;
        positions.push((Arc::<str>::from(*column), index));
    }

    let file: std::sync::Arc<Path> = Arc::from(path);
    let mut records = Vec::new();
    let mut row = csv::StringRecord::new();
    loop {
        match reader.read_record(&mut row) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => return Err(csv_error(path, e)),
        }
        let line = row.position().map_or(0, |p| p.line());
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
    Ok(records)
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

    #[test]
    fn records_carry_physical_line_numbers_across_quoted_newlines() {
        let f = write(b"\xEF\xBB\xBFid,note,email\n1,\"two\nlines\",a@x.io\n2,,b@x.io\n");
        let records = read_records(f.path(), b',', &["id", "email", "note"]).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(
            records[0].origin,
            Origin::Line {
                file: f.path().into(),
                line: 2
            }
        );
        assert_eq!(
            records[1].origin,
            Origin::Line {
                file: f.path().into(),
                line: 4
            }
        );
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
        let err = read_records(f.path(), b',', &["id", "email"]).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("column \"email\"") && text.contains("id, mail"),
            "{text}"
        );
    }

    #[test]
    fn a_ragged_row_refuses_the_file_with_its_line() {
        let f = write(b"id,email\n1,a@x.io\n2\n");
        let err = read_records(f.path(), b',', &["id"]).unwrap_err();
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
    fn latin1_is_refused_with_the_line_of_the_first_bad_byte() {
        let f = write(b"id,name\n1,Ann\n2,Jos\xE9\n");
        let err = read_records(f.path(), b',', &["id"]).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains(":3:") && text.contains("save the file as UTF-8"),
            "{text}"
        );
    }

    #[test]
    fn utf16_is_refused() {
        let f = write(b"\xFF\xFEi\0d\0");
        let err = read_records(f.path(), b',', &["id"]).unwrap_err();
        assert!(err.to_string().contains("UTF-16"), "{err}");
    }

    #[test]
    fn another_delimiter_works() {
        let f = write(b"id;email\n1;a@x.io\n");
        let records = read_records(f.path(), b';', &["id", "email"]).unwrap();
        assert_eq!(records[0].get("email"), Some("a@x.io"));
    }

    #[test]
    fn an_empty_file_has_no_header() {
        let f = write(b"");
        assert!(matches!(
            read_records(f.path(), b',', &["id"]),
            Err(SourceError::MissingHeader { .. })
        ));
    }
}
