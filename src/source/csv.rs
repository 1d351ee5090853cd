//! CSV files (HR exports): a header row, UTF-8 with or without a BOM, a
//! configurable delimiter. Whole-file refusals (unreadable, too recently
//! modified, not UTF-8, missing or doubled column, ragged row) come from
//! here; everything about a record's meaning is the mapping's job.
//!
//! Rows are handed on one at a time ([`read_rows`]), straight into the
//! mapping's [`DirectoryBuilder`](super::mapping::DirectoryBuilder);
//! [`read_records`] collects them as [`SourceRecord`]s instead. The file is
//! parsed on a thread of its own, a few hundred rows ahead of the sink: a
//! [`Row`] borrows the [`RowBatch`] it came in, so no more than a few
//! batches of rows are held as values, and the sink is told of each row a
//! few rows before it comes ([`RowSink::ahead`]), to fetch what it will
//! look up.
//!
//! A file cannot always say who is absent: when its last line has no line
//! terminator, when it ends inside a quoted value, or when its size or
//! modification time changed while it was read, it may be cut short, so the
//! read says so ([`CsvRead::withheld`]) and the run deletes nothing. The
//! last row of a file cut short is refused (it may be cut inside a value):
//! each data row is handed on only once the next one is read, or the end is
//! known.
//!
//! Rows where every field is empty (spreadsheets leave them) are not
//! records at the end of the file; amid the data, such a row is a refused
//! record that names no externalId (the mapping withholds deletes for it).

use std::path::Path;
use std::sync::{mpsc, Arc};
use std::time::{Duration, SystemTime};

use super::mapping::RecordView;
use super::whole_file::{self, WholeFile};
use super::SourceError;
use crate::config::AbsentRule;
use crate::directory::{Origin, SourceRecord, Withheld};

/// What one read of a file gave, collected.
#[derive(Debug)]
pub struct CsvRead {
    /// One record per data row, in file order (rows marked absent left out).
    pub records: Vec<SourceRecord>,
    /// Why this read cannot say who is absent, if it cannot.
    pub withheld: Vec<Withheld>,
    /// The rows `absent_when` marked absent (not in `records`), in file
    /// order: the mapping reads only their externalId, so that a delete can
    /// say the user is disabled rather than gone.
    pub disabled: Vec<SourceRecord>,
}

/// Which list a row belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RowKind {
    /// A record (a refused one too: an empty row amid the data, a row cut short).
    Record,
    /// A row `absent_when` marked absent.
    Disabled,
}

/// Where the rows of a file go, one at a time, in file order.
pub trait RowSink {
    /// Before the first row: about how many rows may follow (the file's
    /// line breaks: more than its rows when values span lines).
    fn expect(&mut self, _rows: usize) {}

    fn row(&mut self, kind: RowKind, row: &Row<'_>);

    /// A row that will come a few rows from now, for a sink that wants to
    /// prepare for it (fetch what it will look up into the cache).
    fn ahead(&mut self, _kind: RowKind, _row: &Row<'_>) {}
}

/// Rows collected as records ([`read_records`]).
struct Collect {
    /// The columns asked for, shared by every record.
    keys: Vec<Arc<str>>,
    records: Vec<SourceRecord>,
    disabled: Vec<SourceRecord>,
}

impl RowSink for Collect {
    fn row(&mut self, kind: RowKind, row: &Row<'_>) {
        let record = row.to_record(&self.keys);
        match kind {
            RowKind::Record => self.records.push(record),
            RowKind::Disabled => self.disabled.push(record),
        }
    }
}

/// One row as the mapping reads it, borrowed from the batch it came in:
/// the values of the columns asked for, by their position in that list
/// (trimmed; empty cells are `None`).
pub struct Row<'r> {
    origin: &'r Origin,
    batch: &'r RowBatch,
    /// Which of the batch's rows it is.
    at: usize,
}

impl RecordView for Row<'_> {
    fn origin(&self) -> &Origin {
        self.origin
    }

    fn value(&self, n: usize) -> Option<&str> {
        if n >= self.batch.width {
            return None;
        }
        let (start, end) = *self.batch.spans.get(self.at * self.batch.width + n)?;
        (end > start).then(|| &self.batch.text[start..end])
    }

    fn problem(&self) -> Option<&str> {
        self.batch.rows.get(self.at)?.problem.as_deref()
    }
}

impl Row<'_> {
    /// The row as an owned record, keyed by `columns` (the list asked for).
    fn to_record(&self, columns: &[Arc<str>]) -> SourceRecord {
        let values = columns
            .iter()
            .enumerate()
            .filter_map(|(n, column)| Some((column.clone(), self.value(n)?.to_owned())))
            .collect();
        SourceRecord {
            origin: self.origin.clone(),
            values,
            problem: self.problem().map(str::to_owned),
        }
    }
}

/// Rows a batch holds at most before it is handed on.
const BATCH_ROWS: usize = 4096;

/// How many rows ahead a sink is told of a row ([`RowSink::ahead`]).
const LOOK_AHEAD: usize = 8;

/// Batches on their way from the reading thread to the sink's at most.
const BATCHES_IN_FLIGHT: usize = 4;

/// Rows read ahead: the file is parsed on a thread of its own while the
/// sink takes the rows before (the two halves of a read take about as long
/// each), and rows travel between the two in batches.
pub struct RowBatch {
    /// How many columns were asked for.
    width: usize,
    /// The values of the columns asked for, trimmed, one after another.
    text: String,
    /// Per row, per column asked for: where its value is in `text` (an
    /// empty range when there is none).
    spans: Vec<(usize, usize)>,
    rows: Vec<BatchRow>,
}

/// `value.trim()`, without looking further when it starts and ends with
/// a visible ASCII character (nearly every value).
fn trim(value: &str) -> &str {
    let visible = |b: Option<&u8>| b.is_some_and(|b| (0x21..0x7f).contains(b));
    let bytes = value.as_bytes();
    if visible(bytes.first()) && visible(bytes.last()) {
        value
    } else {
        value.trim()
    }
}

/// What a batch knows of a row besides its values.
struct BatchRow {
    kind: RowKind,
    line: u64,
    problem: Option<Box<str>>,
}

impl RowBatch {
    fn new(width: usize) -> RowBatch {
        RowBatch {
            width,
            text: String::new(),
            spans: Vec::with_capacity(BATCH_ROWS * width),
            rows: Vec::with_capacity(BATCH_ROWS),
        }
    }

    fn clear(&mut self) {
        self.text.clear();
        self.spans.clear();
        self.rows.clear();
    }

    /// Adds a row: the values of `fields` at `positions`, trimmed.
    fn push(
        &mut self,
        kind: RowKind,
        line: u64,
        fields: &csv::StringRecord,
        positions: &[usize],
        problem: Option<&str>,
    ) {
        for &index in positions {
            let value = fields.get(index).map_or("", trim);
            let start = self.text.len();
            self.text.push_str(value);
            self.spans.push((start, self.text.len()));
        }
        self.rows.push(BatchRow {
            kind,
            line,
            problem: problem.map(Box::from),
        });
    }

    fn is_full(&self) -> bool {
        self.rows.len() >= BATCH_ROWS
    }

    /// Each row to `sink`, in order.
    fn hand_on(&self, file: &Arc<Path>, sink: &mut dyn RowSink) {
        // One origin for the rows and one for the rows told ahead, their
        // line set row by row: counting each row on the file's `Arc` (a
        // locked instruction) would wait for every store before it, and
        // those are the last row's, into memory just allocated.
        let mut here = Origin::Line {
            file: file.clone(),
            line: 0,
        };
        let mut ahead = here.clone();
        for (at, row) in self.rows.iter().enumerate() {
            if let Some(later) = self.rows.get(at + LOOK_AHEAD) {
                set_line(&mut ahead, later.line);
                let view = Row {
                    origin: &ahead,
                    batch: self,
                    at: at + LOOK_AHEAD,
                };
                sink.ahead(later.kind, &view);
            }
            set_line(&mut here, row.line);
            let view = Row {
                origin: &here,
                batch: self,
                at,
            };
            sink.row(row.kind, &view);
        }
    }
}

/// Moves a line's origin to line `to` of the same file.
fn set_line(origin: &mut Origin, to: u64) {
    if let Origin::Line { line, .. } = origin {
        *line = to;
    }
}

/// The reading thread's end: rows go into a batch, and full batches to the
/// sink's thread (which sends the emptied ones back for reuse).
struct Batches {
    batch: RowBatch,
    full: mpsc::SyncSender<RowBatch>,
    emptied: mpsc::Receiver<RowBatch>,
    /// Set once the sink's thread stopped taking batches (it panicked):
    /// nothing more is read.
    gone: bool,
}

impl Batches {
    fn push(
        &mut self,
        kind: RowKind,
        line: u64,
        fields: &csv::StringRecord,
        positions: &[usize],
        problem: Option<&str>,
    ) {
        self.batch.push(kind, line, fields, positions, problem);
        if self.batch.is_full() {
            self.send();
        }
    }

    /// Hands on the rows batched so far, if any.
    fn send(&mut self) {
        if self.batch.rows.is_empty() || self.gone {
            return;
        }
        let next = match self.emptied.try_recv() {
            Ok(mut reused) => {
                reused.clear();
                reused
            }
            Err(_) => RowBatch::new(self.batch.width),
        };
        let full = std::mem::replace(&mut self.batch, next);
        self.gone = self.full.send(full).is_err();
    }
}

const CUT_SHORT_ADVICE: &str =
    "the file may be truncated or still being written; write it elsewhere and rename it into place";

const EMPTY_ROW_PROBLEM: &str =
    "every field of the row is empty; amid the data it may be a record whose values were lost";

/// Reads `path` and returns one record per data row, holding the values of
/// `columns` (trimmed; empty cells absent). Every column in `columns` must be
/// in the header, once. With `min_age`, a file modified more recently than
/// that is refused. A row matching any of `absent_when` is not a record (the
/// user is not in the directory) but one of [`CsvRead::disabled`] (a delete
/// of the user says it is disabled); every column the rules name must be in
/// the header, once, too.
pub fn read_records(
    path: &Path,
    delimiter: u8,
    columns: &[&str],
    min_age: Option<Duration>,
    absent_when: &[AbsentRule],
) -> Result<CsvRead, SourceError> {
    read_records_observed(path, delimiter, columns, min_age, absent_when, &mut || {})
}

/// [`read_records`], row by row: each row goes to `sink` (in file order,
/// records and rows marked absent interleaved), and the read returns only
/// why it cannot say who is absent, if it cannot. On an error, the rows
/// already handed on are to be thrown away.
pub fn read_rows(
    path: &Path,
    delimiter: u8,
    columns: &[&str],
    min_age: Option<Duration>,
    absent_when: &[AbsentRule],
    sink: &mut dyn RowSink,
) -> Result<Vec<Withheld>, SourceError> {
    let file = CsvFile {
        path,
        delimiter,
        columns,
        absent_when,
    };
    file.read(min_age, &mut || {}, sink)
}

/// [`read_records`], calling `between` after the file is opened and looked
/// at and before it is read (a test writes to the file there).
fn read_records_observed(
    path: &Path,
    delimiter: u8,
    columns: &[&str],
    min_age: Option<Duration>,
    absent_when: &[AbsentRule],
    between: &mut dyn FnMut(),
) -> Result<CsvRead, SourceError> {
    let mut rows = Collect {
        keys: columns.iter().map(|c| Arc::from(*c)).collect(),
        records: Vec::new(),
        disabled: Vec::new(),
    };
    let file = CsvFile {
        path,
        delimiter,
        columns,
        absent_when,
    };
    let withheld = file.read(min_age, between, &mut rows)?;
    Ok(CsvRead {
        records: rows.records,
        withheld,
        disabled: rows.disabled,
    })
}

/// A file to read, and how.
struct CsvFile<'a> {
    path: &'a Path,
    delimiter: u8,
    columns: &'a [&'a str],
    absent_when: &'a [AbsentRule],
}

impl CsvFile<'_> {
    fn read(
        &self,
        min_age: Option<Duration>,
        between: &mut dyn FnMut(),
        sink: &mut dyn RowSink,
    ) -> Result<Vec<Withheld>, SourceError> {
        let file: Arc<Path> = Arc::from(self.path);
        let (bytes, changed) = read_stable(self.path, min_age, between)?;
        let mut withheld = Vec::new();
        if let Some(cause) = changed {
            withheld.push(Withheld {
                origin: Origin::File { file: file.clone() },
                cause,
            });
        }
        let text = decode(self.path, &bytes)?;
        let rows = RowReader::new(self, file.clone(), text)?;
        let (cut_short, counts) = read_alongside(rows, &file, sink)?;
        withheld.extend(cut_short);
        if !self.absent_when.is_empty() {
            tracing::info!(
                file = %self.path.display(),
                records = counts.records,
                absent = counts.absent,
                "CSV rows marked absent by source.csv.absent_when are not in the directory."
            );
        }
        Ok(withheld)
    }
}

/// Parses the rows on a thread of its own and hands them to `sink` on this
/// one, in file order. An error of the file's (a malformed or ragged row)
/// is the read's, whatever the sink made of the rows before it.
fn read_alongside(
    mut rows: RowReader<'_>,
    file: &Arc<Path>,
    sink: &mut dyn RowSink,
) -> Result<(Option<Withheld>, Counts), SourceError> {
    let width = rows.positions.len();
    let text = rows.text;
    std::thread::scope(|scope| {
        let (full, batches) = mpsc::sync_channel(BATCHES_IN_FLIGHT);
        let (give_back, emptied) = mpsc::channel();
        let reader = scope.spawn(move || {
            let mut out = Batches {
                batch: RowBatch::new(width),
                full,
                emptied,
                gone: false,
            };
            let read = rows.read_all(&mut out);
            let end = read.map(|()| rows.finish(&mut out));
            out.send();
            end
        });
        sink.expect(memchr::memchr_iter(b'\n', text.as_bytes()).count());
        for batch in batches {
            batch.hand_on(file, sink);
            // The reader may be done already; then the batch is dropped.
            let _ = give_back.send(batch);
        }
        reader
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// What the last row read was, for a file that may be cut short.
#[derive(Clone, Copy)]
enum LastRow {
    /// No row yet: only the header.
    Header,
    /// Every field empty.
    Empty,
    /// A data row (the pending one): marked absent or not.
    Data,
}

/// The data row read last, not handed on yet: whether it is the file's
/// last row (then, cut short, it is refused) is known only once the next
/// row is read, or the end.
struct Pending {
    line: u64,
    absent: bool,
}

/// How many rows went each way (for the log).
#[derive(Clone, Copy, Default)]
struct Counts {
    records: usize,
    absent: usize,
}

/// Reads the rows of a decoded file after its header, in order.
struct RowReader<'t> {
    path: &'t Path,
    file: Arc<Path>,
    text: &'t str,
    delimiter: u8,
    reader: csv::Reader<&'t [u8]>,
    lines: Lines<'t>,
    /// How many fields the header has (every data row must have as many).
    width: usize,
    /// Where each column asked for is in a row.
    positions: Vec<usize>,
    /// Each `absent_when` rule, with where its column is.
    absent: Vec<(&'t AbsentRule, usize)>,
    /// Rows where every field is empty, not yet known to be trailing.
    empty_rows: Vec<u64>,
    /// The last row read: its first line, where it starts, what it was.
    last: (u64, usize, LastRow),
    row: csv::StringRecord,
    pending_fields: csv::StringRecord,
    pending: Option<Pending>,
    /// The fields of an empty row (none: every value is absent).
    no_fields: csv::StringRecord,
    counts: Counts,
}

impl<'t> RowReader<'t> {
    /// Reads the header and finds the columns asked for and the columns
    /// the `absent_when` rules read.
    fn new(file: &CsvFile<'t>, shared: Arc<Path>, text: &'t str) -> Result<Self, SourceError> {
        let path = file.path;
        let mut lines = Lines::new(text.as_bytes());
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(file.delimiter)
            .has_headers(true)
            .flexible(true)
            .from_reader(text.as_bytes());
        let (header_line, header_start) = lines.record_at(0);
        let headers: Vec<String> = reader
            .headers()
            .map_err(|e| csv_error(path, &mut lines, e))?
            .iter()
            .map(|h| h.trim().to_owned())
            .collect();
        if headers.iter().all(String::is_empty) {
            return Err(SourceError::MissingHeader {
                path: path.to_path_buf(),
            });
        }
        let header = Header {
            path,
            line: header_line,
            columns: &headers,
        };
        let positions = file
            .columns
            .iter()
            .map(|column| header.index(column, "the mapping"))
            .collect::<Result<Vec<_>, _>>()?;
        let absent = file
            .absent_when
            .iter()
            .enumerate()
            .map(|(n, rule)| {
                header
                    .index(&rule.column, &format!("source.csv.absent_when[{n}]"))
                    .map(|i| (rule, i))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RowReader {
            path,
            file: shared,
            text,
            delimiter: file.delimiter,
            reader,
            lines,
            width: headers.len(),
            positions,
            absent,
            empty_rows: Vec::new(),
            last: (header_line, header_start, LastRow::Header),
            row: csv::StringRecord::new(),
            pending_fields: csv::StringRecord::new(),
            pending: None,
            no_fields: csv::StringRecord::new(),
            counts: Counts::default(),
        })
    }

    /// Every row to the end of the file: each data row once the next row
    /// is read, empty rows amid the data as refused records.
    fn read_all(&mut self, out: &mut Batches) -> Result<(), SourceError> {
        loop {
            // Where the reader stands is where the next record's position is
            // counted from (its own line numbers are not exact: see `Lines`).
            let at = self.reader.position().byte();
            match self.reader.read_record(&mut self.row) {
                Ok(false) => return Ok(()),
                Ok(true) => {}
                Err(e) => return Err(csv_error(self.path, &mut self.lines, e)),
            }
            let (line, start) = self.lines.record_at(at);
            if out.gone {
                return Ok(());
            }
            // The row before is not the last: handed on as it is.
            self.hand_on_pending(out, None);
            if self.row.iter().all(|f| f.trim().is_empty()) {
                self.empty_rows.push(line);
                self.last = (line, start, LastRow::Empty);
                continue;
            }
            if self.row.len() != self.width {
                return Err(SourceError::Ragged {
                    path: self.path.to_path_buf(),
                    line,
                    expected: self.width as u64,
                    found: self.row.len() as u64,
                });
            }
            // Empty rows followed by data are amid the data: refused records.
            self.hand_on_empty_rows(out);
            let absent = self
                .absent
                .iter()
                .any(|(rule, index)| rule.matches(self.row.get(*index).map_or("", str::trim)));
            std::mem::swap(&mut self.row, &mut self.pending_fields);
            self.pending = Some(Pending { line, absent });
            self.last = (line, start, LastRow::Data);
        }
    }

    fn origin(&self, line: u64) -> Origin {
        Origin::Line {
            file: self.file.clone(),
            line,
        }
    }

    fn hand_on_empty_rows(&mut self, out: &mut Batches) {
        for line in std::mem::take(&mut self.empty_rows) {
            out.push(
                RowKind::Record,
                line,
                &self.no_fields,
                &self.positions,
                Some(EMPTY_ROW_PROBLEM),
            );
            self.counts.records += 1;
        }
    }

    /// Hands on the pending data row, if any; with a `problem` (it may be
    /// cut short) it is a record to refuse even when it reads absent (the
    /// cell that made it absent may be cut too).
    fn hand_on_pending(&mut self, out: &mut Batches, problem: Option<&str>) {
        let Some(pending) = self.pending.take() else {
            return;
        };
        let kind = if pending.absent && problem.is_none() {
            self.counts.absent += 1;
            RowKind::Disabled
        } else {
            self.counts.records += 1;
            RowKind::Record
        };
        out.push(
            kind,
            pending.line,
            &self.pending_fields,
            &self.positions,
            problem,
        );
    }

    /// At the end: the last data row, refused when the file may be cut
    /// short (and then why deletes are withheld), and how many rows went
    /// each way. Empty rows left trail the data: not records at all.
    fn finish(mut self, out: &mut Batches) -> (Option<Withheld>, Counts) {
        let (line, start, last) = self.last;
        let Some(what) = self.cut_short(start) else {
            self.hand_on_pending(out, None);
            return (None, self.counts);
        };
        if let LastRow::Data = last {
            let problem = format!("the row may be cut short: {what}");
            self.hand_on_pending(out, Some(&problem));
        }
        let withheld = Withheld {
            origin: self.origin(line),
            cause: format!("{what} ({CUT_SHORT_ADVICE})"),
        };
        (Some(withheld), self.counts)
    }

    /// Why the file may be cut short, if it may: `start` is where its last row starts.
    fn cut_short(&self, start: usize) -> Option<&'static str> {
        if !self.text.ends_with(['\n', '\r']) {
            Some("the last line has no line terminator")
        } else if ends_inside_quotes(
            self.text.as_bytes().get(start..).unwrap_or_default(),
            self.delimiter,
        ) {
            Some("the file ends inside a quoted value")
        } else {
            None
        }
    }
}

/// The header row, for finding the columns the mapping and the
/// `absent_when` rules read.
struct Header<'a> {
    path: &'a Path,
    /// Its physical line (1, unless blank lines come first).
    line: u64,
    columns: &'a [String],
}

impl Header<'_> {
    /// Where `column` is. A column that is read must be in the header
    /// exactly once: with two, which one is meant is unknown. `named_by`
    /// says who reads it (`the mapping`, `source.csv.absent_when[0]`).
    fn index(&self, column: &str, named_by: &str) -> Result<usize, SourceError> {
        let mut found = self
            .columns
            .iter()
            .enumerate()
            .filter(|(_, h)| *h == column)
            .map(|(i, _)| i);
        let index = found.next().ok_or_else(|| SourceError::MissingColumn {
            path: self.path.to_path_buf(),
            line: self.line,
            column: column.to_owned(),
            named_by: named_by.to_owned(),
            available: self.columns.to_vec(),
        })?;
        if let Some(second) = found.next() {
            return Err(SourceError::DuplicateColumn {
                path: self.path.to_path_buf(),
                line: self.line,
                column: column.to_owned(),
                named_by: named_by.to_owned(),
                first: index + 1,
                second: second + 1,
            });
        }
        Ok(index)
    }
}

/// Physical line numbers (from 1) of the records of a text, counted forward
/// from its start as the `csv` crate splits lines: `\n`, `\r\n` and a lone
/// `\r` are one line break each, inside quoted values too. The crate's own
/// line numbers count neither a CRLF's `\r\n` as one break nor the blank
/// lines it skips (rust-csv issues #395 and #208); its byte offsets are
/// exact but point where the previous record ended, before the rest of its
/// terminator and any blank lines.
struct Lines<'a> {
    text: &'a [u8],
    /// Where counting has reached (always a record's first byte, or 0).
    at: usize,
    /// The line `at` is on.
    line: u64,
}

impl<'a> Lines<'a> {
    fn new(text: &'a [u8]) -> Lines<'a> {
        Lines {
            text,
            at: 0,
            line: 1,
        }
    }

    /// The line and first byte of the record the reader placed at `byte`
    /// (line terminators there are skipped: no record starts with one).
    /// Records come in file order, so each call counts only from the last.
    fn record_at(&mut self, byte: u64) -> (u64, usize) {
        let mut start = usize::try_from(byte)
            .unwrap_or(usize::MAX)
            .clamp(self.at, self.text.len());
        while matches!(self.text.get(start), Some(b'\n' | b'\r')) {
            start += 1;
        }
        self.line += line_breaks(&self.text[self.at..start]);
        self.at = start;
        (self.line, start)
    }
}

/// How many line breaks `bytes` holds: `\n`, `\r\n` and a lone `\r` count
/// one each. (A `\r` at the end counts: what follows it starts a record,
/// and no record starts with `\n`.)
fn line_breaks(bytes: &[u8]) -> u64 {
    // Both counted in one pass (without stopping early: the compiler does
    // it a vector at a time).
    let (lf, cr) = bytes.iter().fold((0usize, 0usize), |(lf, cr), b| {
        (lf + usize::from(*b == b'\n'), cr + usize::from(*b == b'\r'))
    });
    if cr == 0 {
        return lf as u64;
    }
    let crlf = bytes.windows(2).filter(|w| *w == b"\r\n").count();
    (lf + cr - crlf) as u64
}

/// Reads the whole file, with what changed while it was read (size or
/// modification time), if anything did. With `min_age`, refuses a file
/// modified more recently than that.
fn read_stable(
    path: &Path,
    min_age: Option<Duration>,
    between: &mut dyn FnMut(),
) -> Result<(WholeFile, Option<String>), SourceError> {
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
    let bytes = whole_file::read_to_end(&mut f, before.len()).map_err(read_error)?;
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
        let line = line_breaks(good) + 1;
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

fn csv_error(path: &Path, lines: &mut Lines<'_>, e: csv::Error) -> SourceError {
    let line = e.position().map(|p| lines.record_at(p.byte()).0);
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
    use proptest::prelude::*;

    use super::*;

    fn write(content: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, content).unwrap();
        f
    }

    fn read(f: &tempfile::NamedTempFile, columns: &[&str]) -> Result<CsvRead, SourceError> {
        read_records(f.path(), b',', columns, None, &[])
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
        read_records_observed(f.path(), b',', &["id", "email"], None, &[], &mut || {
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
        let err =
            read_records(f.path(), b',', &["id"], Some(Duration::from_secs(60)), &[]).unwrap_err();
        assert!(
            matches!(err, SourceError::TooRecent { min_age_secs: 60, age_secs, .. } if age_secs < 60),
            "{err:?}"
        );
        f.as_file()
            .set_modified(SystemTime::now() - Duration::from_secs(120))
            .unwrap();
        assert!(read_records(f.path(), b',', &["id"], Some(Duration::from_secs(60)), &[]).is_ok());
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
        let read = read_records(f.path(), b';', &["id", "email"], None, &[]).unwrap();
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

    // ---- physical line numbers: every message names the line a record starts on ----

    fn lines_of(records: &[SourceRecord]) -> Vec<u64> {
        records
            .iter()
            .map(|r| match &r.origin {
                Origin::Line { line, .. } => *line,
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn line_numbers_are_exact_for_crlf_files() {
        let f = write(b"id,email\r\n1,a@x.io\r\n2,b@x.io\r\n3,c@x.io\r\n");
        assert_eq!(lines_of(&records(&f, &["id"])), [2, 3, 4]);
    }

    #[test]
    fn line_numbers_count_blank_lines() {
        let f = write(b"id,email\n1,a@x.io\n\n2,b@x.io\n\n\n3,c@x.io\n");
        assert_eq!(lines_of(&records(&f, &["id"])), [2, 4, 7]);
        let f = write(b"id,email\r\n1,a@x.io\r\n\r\n2,b@x.io\r\n\r\n\r\n3,c@x.io\r\n");
        assert_eq!(lines_of(&records(&f, &["id"])), [2, 4, 7]);
    }

    #[test]
    fn line_numbers_count_quoted_newlines_in_crlf_files() {
        let f = write(
            b"\xEF\xBB\xBFid,note,email\r\n1,\"two\r\nlines\",a@x.io\r\n2,\"three\r\n\r\nlines\",b@x.io\r\n3,,c@x.io\r\n",
        );
        let records = records(&f, &["id", "note"]);
        assert_eq!(lines_of(&records), [2, 4, 7]);
        assert_eq!(records[0].get("note"), Some("two\r\nlines"));
    }

    #[test]
    fn a_lone_cr_is_a_line_break() {
        // An old Mac export: the reader splits records on a lone CR, so lines are counted so too.
        let f = write(b"id,email\r1,a@x.io\r\r2,\"b@x.io\"\r3,c@x.io\r");
        assert_eq!(lines_of(&records(&f, &["id"])), [2, 4, 5]);
        // Mixed: LF then CR is two breaks, CRLF one.
        let f = write(b"id,email\n1,a@x.io\n\r2,b@x.io\r\n3,c@x.io\n");
        assert_eq!(lines_of(&records(&f, &["id"])), [2, 4, 5]);
    }

    #[test]
    fn a_header_after_blank_lines_names_its_own_line() {
        let f = write(b"\r\n\r\nid,mail\r\n1,a@x.io\r\n");
        let err = read(&f, &["id", "email"]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("{}:3: column \"email\"", f.path().display())),
            "{err}"
        );
        assert_eq!(lines_of(&records(&f, &["id"])), [4]);
    }

    #[test]
    fn ragged_rows_name_their_own_line() {
        // CRLF, a BOM, a quoted newline and a blank line before the ragged row (line 6).
        let f = write(
            b"\xEF\xBB\xBFid,note,email\r\n1,\"a\r\nb\",a@x.io\r\n\r\n2,,b@x.io\r\n3,c@x.io\r\n",
        );
        let err = read(&f, &["id"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}:6: the row has 2 fields but the header has 3",
                f.path().display()
            )
        );
    }

    #[test]
    fn an_empty_row_amid_crlf_data_names_its_own_line() {
        let f = write(b"id,email\r\n1,a@x.io\r\n\r\n,\r\n2,b@x.io\r\n,\r\n");
        let records = records(&f, &["id"]);
        assert_eq!(lines_of(&records), [2, 4, 5]);
        assert!(records[1].problem.is_some());
    }

    #[test]
    fn the_cut_short_reason_names_the_last_rows_line_in_a_crlf_file() {
        let f = write(b"id,note,email\r\n1,\"a\r\nb\",a@x.io\r\n\r\n2,x,b@x.io");
        let read = read(&f, &["id", "email"]).unwrap();
        assert_eq!(lines_of(&read.records), [2, 5]);
        assert!(read.records[1].problem.is_some());
        assert_eq!(read.withheld[0].origin, line(&f, 5));
    }

    #[test]
    fn latin1_in_an_old_mac_file_names_its_line() {
        let f = write(b"id,name\r1,Ann\r2,Jos\xE9\r");
        let err = read(&f, &["id"]).unwrap_err();
        assert!(err.to_string().contains(":3: byte 0xE9"), "{err}");
    }

    #[test]
    fn line_breaks_count_crlf_once_and_a_lone_cr() {
        assert_eq!(line_breaks(b""), 0);
        assert_eq!(line_breaks(b"a\nb\n"), 2);
        assert_eq!(line_breaks(b"a\r\nb\r\n"), 2);
        assert_eq!(line_breaks(b"a\rb\r"), 2);
        assert_eq!(line_breaks(b"\n\r\r\n\r"), 4);
    }

    // ---- rows marked absent (source.csv.absent_when) ----

    const STAFF: &[u8] = b"id,email,status,left\n1,a@x.io,Active,\n2,b@x.io, inactive ,\n3,not-an-email,TERMINATED,\n4,d@x.io,Active,2024-05-31\n5,e@x.io,Activ,\n";

    fn rules() -> Vec<AbsentRule> {
        vec![
            AbsentRule::one_of("status", &["Inactive", "Terminated"]),
            AbsentRule::not_empty("left"),
        ]
    }

    #[test]
    fn inactive_rows_are_absent_not_records() {
        let f = write(STAFF);
        let read = read_records(f.path(), b',', &["id", "email"], None, &rules()).unwrap();
        assert_eq!(lines_of(&read.disabled), [3, 4, 5]);
        assert_eq!(
            read.disabled
                .iter()
                .map(|r| r.get("id").unwrap_or_default())
                .collect::<Vec<_>>(),
            ["2", "3", "4"],
            "each with the mapped values, for its externalId"
        );
        assert_eq!(
            lines_of(&read.records),
            [2, 6],
            "1 and 5 (\"Activ\" is no rule's)"
        );
        assert!(read.records.iter().all(|r| r.problem.is_none()));
        assert!(read.withheld.is_empty());
        // Without rules, every row is a record.
        assert_eq!(records(&f, &["id", "email"]).len(), 5);
    }

    #[test]
    fn an_absent_when_column_missing_from_the_header_is_an_error_naming_file_line_and_column() {
        let f = write(STAFF);
        let rules = [AbsentRule::not_empty("Termination Date")];
        let err = read_records(f.path(), b',', &["id"], None, &rules).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}:1: column \"Termination Date\" named in source.csv.absent_when[0] is not in the header (columns: id, email, status, left)",
                f.path().display()
            )
        );
        let f = write(b"id,status,email,status\n1,Active,a@x.io,Inactive\n");
        let rules = [AbsentRule::one_of("status", &["inactive"])];
        let err = read_records(f.path(), b',', &["id"], None, &rules).unwrap_err();
        assert!(
            err.to_string().contains(":1: the header names column \"status\" twice (columns 2 and 4); source.csv.absent_when[0] reads it"),
            "{err}"
        );
    }

    #[test]
    fn an_empty_row_before_an_absent_row_is_amid_the_data() {
        let f = write(b"id,email,status,left\n1,a@x.io,Active,\n,,,\n2,b@x.io,Inactive,\n,,,\n");
        let read = read_records(f.path(), b',', &["id"], None, &rules()).unwrap();
        assert_eq!(lines_of(&read.records), [2, 3]);
        assert!(read.records[1].problem.is_some());
    }

    #[test]
    fn an_absent_row_that_is_ragged_still_refuses_the_file() {
        // Its fields may be shifted: the status read may be another column's.
        let f = write(b"id,email,status,left\n1,a@x.io,Active,\n2,Inactive,\n");
        let err = read_records(f.path(), b',', &["id"], None, &rules()).unwrap_err();
        assert!(
            matches!(err, SourceError::Ragged { line: 3, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn the_last_row_of_a_cut_file_is_refused_even_when_it_reads_absent() {
        // "Inactive" may be the start of "Inactive since ..." or the row cut in its last cell.
        let f = write(b"id,email,left,status\n1,a@x.io,,Active\n2,b@x.io,,Inactive");
        let read = read_records(f.path(), b',', &["id"], None, &rules()).unwrap();
        assert!(read.disabled.is_empty());
        assert_eq!(lines_of(&read.records), [2, 3]);
        assert_eq!(
            read.records[1].problem.as_deref(),
            Some("the row may be cut short: the last line has no line terminator")
        );
        assert_eq!(read.records[1].get("id"), Some("2"));
        assert_eq!(read.records[0].problem, None, "not the row before it");
        assert_eq!(read.withheld.len(), 1);
    }

    /// The reader as it was before rows were streamed (every row a
    /// `SourceRecord`, collected, then adjusted at the end), kept word for
    /// word as the reference `read_records` is checked against.
    mod before {
        use std::collections::BTreeMap;
        use std::path::Path;
        use std::sync::Arc;
        use std::time::Duration;

        use super::super::{
            csv_error, decode, ends_inside_quotes, read_stable, CsvRead, Header, Lines,
            CUT_SHORT_ADVICE,
        };
        use crate::config::AbsentRule;
        use crate::directory::{Origin, SourceRecord, Withheld};
        use crate::source::SourceError;

        /// What the last row read was, for a file that may be cut short.
        enum LastRow {
            /// No row yet: only the header.
            Header,
            /// Every field empty.
            Empty,
            /// A row `absent_when` marked absent: the last of `disabled` (cut
            /// short, it is refused instead).
            Absent,
            /// The last of `records`.
            Record,
        }

        /// [`read_records`], calling `between` after the file is opened and looked
        /// at and before it is read (a test writes to the file there).
        pub fn read_records_observed(
            path: &Path,
            delimiter: u8,
            columns: &[&str],
            min_age: Option<Duration>,
            absent_when: &[AbsentRule],
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
            let mut lines = Lines::new(text.as_bytes());
            let mut reader = csv::ReaderBuilder::new()
                .delimiter(delimiter)
                .has_headers(true)
                .flexible(true)
                .from_reader(text.as_bytes());
            let (header_line, header_start) = lines.record_at(0);
            let headers: Vec<String> = reader
                .headers()
                .map_err(|e| csv_error(path, &mut lines, e))?
                .iter()
                .map(|h| h.trim().to_owned())
                .collect();
            if headers.iter().all(String::is_empty) {
                return Err(SourceError::MissingHeader {
                    path: path.to_path_buf(),
                });
            }
            let header = Header {
                path,
                line: header_line,
                columns: &headers,
            };
            let positions = columns
                .iter()
                .map(|column| {
                    header
                        .index(column, "the mapping")
                        .map(|i| (Arc::<str>::from(*column), i))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let absent_positions = absent_when
                .iter()
                .enumerate()
                .map(|(n, rule)| {
                    header
                        .index(&rule.column, &format!("source.csv.absent_when[{n}]"))
                        .map(|i| (rule, i))
                })
                .collect::<Result<Vec<_>, _>>()?;

            let mut records = Vec::new();
            let mut disabled = Vec::new();
            // Rows where every field is empty, not yet known to be trailing.
            let mut empty_rows: Vec<u64> = Vec::new();
            // The last row read: its first line, where it starts, what it was.
            let mut last_row = (header_line, header_start, LastRow::Header);
            let mut row = csv::StringRecord::new();
            loop {
                // Where the reader stands is where the next record's position is
                // counted from (its own line numbers are not exact: see `Lines`).
                let at = reader.position().byte();
                match reader.read_record(&mut row) {
                    Ok(false) => break,
                    Ok(true) => {}
                    Err(e) => return Err(csv_error(path, &mut lines, e)),
                }
                let (line, start) = lines.record_at(at);
                if row.iter().all(|f| f.trim().is_empty()) {
                    empty_rows.push(line);
                    last_row = (line, start, LastRow::Empty);
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
                let record = SourceRecord {
                    origin: Origin::Line {
                        file: file.clone(),
                        line,
                    },
                    values,
                    problem: None,
                };
                let is_absent = absent_positions
                    .iter()
                    .any(|(rule, index)| rule.matches(row.get(*index).map_or("", str::trim)));
                if is_absent {
                    disabled.push(record);
                    last_row = (line, start, LastRow::Absent);
                } else {
                    records.push(record);
                    last_row = (line, start, LastRow::Record);
                }
            }
            // What is left in `empty_rows` trails the data: not records at all.

            let (line, start, last) = last_row;
            let cut_short = if !text.ends_with(['\n', '\r']) {
                Some("the last line has no line terminator")
            } else if ends_inside_quotes(
                text.as_bytes().get(start..).unwrap_or_default(),
                delimiter,
            ) {
                Some("the file ends inside a quoted value")
            } else {
                None
            };
            if let Some(what) = cut_short {
                let problem = format!("the row may be cut short: {what}");
                match last {
                    LastRow::Record => {
                        if let Some(last) = records.last_mut() {
                            last.problem = Some(problem);
                        }
                    }
                    // Its cells may be cut too, the one that made it absent
                    // among them: refused, like any row that may be cut.
                    LastRow::Absent => {
                        if let Some(mut record) = disabled.pop() {
                            record.problem = Some(problem);
                            records.push(record);
                        }
                    }
                    LastRow::Header | LastRow::Empty => {}
                }
                withheld.push(Withheld {
                    origin: Origin::Line { file, line },
                    cause: format!("{what} ({CUT_SHORT_ADVICE})"),
                });
            }
            if !absent_when.is_empty() {
                tracing::info!(
                    file = %path.display(),
                    records = records.len(),
                    absent = disabled.len(),
                    "CSV rows marked absent by source.csv.absent_when are not in the directory."
                );
            }
            Ok(CsvRead {
                records,
                withheld,
                disabled,
            })
        }
    }

    /// A CSV text from pieces: a header (after blank lines, now and then),
    /// rows of plain, empty, quoted and multi-line cells (now and then one
    /// field short), `\n`, `\r\n` or a lone `\r` after each, blank lines
    /// between, a BOM, and an end that may be cut.
    fn arbitrary_csv() -> impl Strategy<Value = Vec<u8>> {
        let cell = prop::sample::select(vec![
            "1",
            "2",
            "a@x.io",
            "Inactive",
            "Active",
            "",
            " ",
            "\"q \"\"x\"\"\"",
            "\"two\nlines\"",
            "\"cr\r\nlf\"",
            "x\"y",
        ]);
        let terminator = prop::sample::select(vec!["\n", "\r\n", "\r"]);
        let row = (
            prop::collection::vec(cell, 3),
            proptest::bool::weighted(0.05),
            terminator.clone(),
            prop::collection::vec(terminator.clone(), 0..2),
        )
            .prop_map(|(cells, short, end, blanks)| {
                let cells = if short { &cells[..2] } else { &cells[..] };
                format!("{}{end}{}", cells.join(","), blanks.concat())
            });
        (
            proptest::bool::weighted(0.2),
            prop::collection::vec(terminator.clone(), 0..2),
            terminator,
            prop::collection::vec(row, 0..12),
            prop::sample::select(vec!["", "", "", "cut", "quote"]),
        )
            .prop_map(|(bom, leading, end, rows, ending)| {
                let mut text = if bom {
                    "\u{feff}".to_owned()
                } else {
                    String::new()
                };
                text.push_str(&leading.concat());
                text.push_str("id,email,status");
                text.push_str(end);
                text.push_str(&rows.concat());
                match ending {
                    "cut" => {
                        let cut = text.trim_end_matches(['\n', '\r']).len();
                        text.truncate(cut);
                    }
                    "quote" => text.push_str("3,\"open"),
                    _ => {}
                }
                text.into_bytes()
            })
    }

    /// A file of several batches: rows, empty rows and rows marked absent
    /// on both sides of the batch boundaries, a quoted value across lines,
    /// and a last row cut short.
    fn several_batches() -> String {
        let mut text = String::from("id,email,status\n");
        for n in 0..BATCH_ROWS * 3 + 7 {
            match n % 97 {
                0 => text.push_str(",,\n"),
                1 => text.push_str(&format!("u{n},\"a\nb{n}@example.com\",active\n")),
                2 => text.push_str(&format!("u{n},u{n}@example.com,inactive\n")),
                _ => text.push_str(&format!("u{n}, u{n}@example.com ,active\n")),
            }
        }
        text.push_str("last,cut@example.com,act");
        text
    }

    #[test]
    fn values_are_trimmed_as_str_trim_does_quick_path_or_not() {
        for v in [
            "",
            " ",
            "a",
            " a",
            "a ",
            "\ta\r",
            "a b",
            "\u{a0}a",
            "a\u{2003}",
            "é",
            "~x!",
            "\u{b}a",
        ] {
            assert_eq!(trim(v), v.trim(), "{v:?}");
        }
    }

    #[test]
    fn rows_across_batches_are_the_rows_read_before() {
        let f = write(several_batches().as_bytes());
        let rules = [AbsentRule::one_of("status", &["inactive"])];
        let columns = ["id", "email"];
        let now = outcome(read_records(f.path(), b',', &columns, None, &rules));
        let then = outcome(before::read_records_observed(
            f.path(),
            b',',
            &columns,
            None,
            &rules,
            &mut || {},
        ));
        let (records, withheld, disabled) = now.clone().unwrap();
        assert!(records.len() > BATCH_ROWS * 2, "{} records", records.len());
        assert!(!disabled.is_empty() && !withheld.is_empty());
        assert_eq!(now, then);
    }

    /// A sink that notes what it was told, in order.
    #[derive(Default)]
    struct Told {
        ahead: Vec<u64>,
        rows: Vec<u64>,
        /// Rows told ahead that had not come when they were told.
        early: usize,
    }

    fn line_of(row: &Row<'_>) -> u64 {
        match row.origin() {
            Origin::Line { line, .. } => *line,
            other => panic!("not a line: {other:?}"),
        }
    }

    impl RowSink for Told {
        fn row(&mut self, _: RowKind, row: &Row<'_>) {
            self.rows.push(line_of(row));
        }

        fn ahead(&mut self, _: RowKind, row: &Row<'_>) {
            let line = line_of(row);
            if self.rows.last().is_none_or(|last| *last < line) {
                self.early += 1;
            }
            self.ahead.push(line);
        }
    }

    #[test]
    fn a_sink_is_told_of_rows_ahead_before_they_come_and_of_nearly_all() {
        let f = write(several_batches().as_bytes());
        let mut told = Told::default();
        read_rows(f.path(), b',', &["id", "email"], None, &[], &mut told).unwrap();
        assert_eq!(
            told.early,
            told.ahead.len(),
            "every row told ahead came later"
        );
        let rows: std::collections::BTreeSet<u64> = told.rows.iter().copied().collect();
        assert!(told.ahead.iter().all(|line| rows.contains(line)));
        // All but the first few of each batch are told ahead.
        let batches = told.rows.len().div_ceil(BATCH_ROWS);
        assert!(
            told.ahead.len() >= told.rows.len() - batches * LOOK_AHEAD,
            "{} of {} rows told ahead",
            told.ahead.len(),
            told.rows.len()
        );
    }

    /// What a read gave, comparable: records, withheld deletes, disabled rows; or the error.
    type Outcome = Result<(Vec<SourceRecord>, Vec<Withheld>, Vec<SourceRecord>), String>;

    fn outcome(read: Result<CsvRead, SourceError>) -> Outcome {
        read.map(|r| (r.records, r.withheld, r.disabled))
            .map_err(|e| e.to_string())
    }

    proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(300))]

        /// Row by row, the reader gives what it gave when it held every
        /// row: the same records, lines, refusals and withheld deletes.
        #[test]
        fn rows_read_one_at_a_time_are_the_rows_read_before(text in arbitrary_csv()) {
            let f = write(&text);
            let rules = [AbsentRule::one_of("status", &["inactive"])];
            let columns = ["id", "email"];
            let now = outcome(read_records(f.path(), b',', &columns, None, &rules));
            let then = outcome(before::read_records_observed(f.path(), b',', &columns, None, &rules, &mut || {}));
            prop_assert_eq!(now, then);
        }
    }
}
