//! Where each key and value of the config file stands (line and column).
//!
//! serde_yaml places syntax and type errors, but not the checks dirsync makes
//! after deserialising (a percentage over 100, a bad URL, an invalid cron
//! expression), and it places duplicate keys badly. This module reads the
//! same text once more with yaml-rust2's marked event parser, used only to
//! locate key paths; the values themselves still come from serde_yaml.
//!
//! Key paths are written the way `serde_path_to_error` prints them:
//! `policy.delete_users.max_percent`, `mapping.customer.labels[0]`.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// A place in the file: line and column, both from 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub column: usize,
}

impl Position {
    fn of(mark: Marker) -> Position {
        Position {
            line: mark.line(),
            // yaml-rust2's scanner counts columns from 0.
            column: mark.col() + 1,
        }
    }
}

/// A key written twice in one mapping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DuplicateKey {
    /// The key path of the duplicate.
    pub key: String,
    /// Where the second one stands.
    pub at: Position,
    /// Where the first one stands.
    pub first: Position,
}

#[derive(Clone, Copy, Debug, Default)]
struct Entry {
    /// Where the key stands (None for the document itself and sequence items).
    key: Option<Position>,
    /// Where the value starts.
    value: Option<Position>,
    /// Scalars are located by their value, mappings by their key.
    scalar: bool,
}

/// The positions of every key path of the first YAML document.
#[derive(Debug, Default)]
pub struct Positions {
    entries: HashMap<String, Entry>,
}

impl Positions {
    /// Reads the positions. Text that is not YAML gives no positions: the
    /// serde_yaml pass that follows reports the syntax error itself.
    pub fn read(text: &str) -> Result<Positions, DuplicateKey> {
        let mut walker = Walker::default();
        if Parser::new_from_str(text).load(&mut walker, false).is_err() || walker.unsupported {
            return Ok(Positions::default());
        }
        match walker.duplicate {
            Some(duplicate) => Err(duplicate),
            None => Ok(Positions {
                entries: walker.entries,
            }),
        }
    }

    /// Where `key_path` stands: a scalar's value, a mapping's or sequence's
    /// key. A path that is not in the file (a required key left out) is
    /// located at its nearest ancestor that is.
    pub fn locate(&self, key_path: &str) -> Option<Position> {
        let mut path = key_path;
        loop {
            if let Some(entry) = self.entries.get(path) {
                let preferred = if entry.scalar {
                    entry.value.or(entry.key)
                } else {
                    entry.key.or(entry.value)
                };
                if let Some(position) = preferred {
                    return Some(position);
                }
            }
            if path.is_empty() {
                return None;
            }
            path = parent(path);
        }
    }
}

/// `a.b[2]` -> `a.b` -> `a` -> `` (the document).
fn parent(path: &str) -> &str {
    match path.rfind(['.', '[']) {
        Some(i) => &path[..i],
        None => "",
    }
}

fn child(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

enum Frame {
    Mapping {
        path: String,
        /// The key whose value comes next; None while a key is expected.
        key: Option<String>,
        seen: HashMap<String, Position>,
    },
    Sequence {
        path: String,
        next: usize,
    },
}

#[derive(Default)]
struct Walker {
    stack: Vec<Frame>,
    entries: HashMap<String, Entry>,
    duplicate: Option<DuplicateKey>,
    /// A construct the walk does not follow (a mapping or sequence as a key).
    unsupported: bool,
    done: bool,
}

impl Walker {
    /// Handles a key scalar; returns true when the event was a key.
    fn take_key(&mut self, event: &Event, at: Position) -> bool {
        let Some(Frame::Mapping { path, key, seen }) = self.stack.last_mut() else {
            return false;
        };
        if key.is_some() {
            return false;
        }
        let Event::Scalar(name, ..) = event else {
            self.unsupported = true;
            return true;
        };
        if path.is_empty() {
            // The document is located at its first key.
            self.entries
                .entry(String::new())
                .or_default()
                .key
                .get_or_insert(at);
        }
        let key_path = child(path, name);
        if let Some(&first) = seen.get(name.as_str()) {
            self.duplicate.get_or_insert(DuplicateKey {
                key: key_path.clone(),
                at,
                first,
            });
        } else {
            seen.insert(name.clone(), at);
        }
        *key = Some(name.clone());
        self.entries
            .entry(key_path)
            .or_default()
            .key
            .get_or_insert(at);
        true
    }

    /// The key path of the value that starts now, and moves the parent on.
    fn value_path(&mut self) -> String {
        match self.stack.last_mut() {
            None => String::new(),
            Some(Frame::Mapping { path, key, .. }) => {
                let name = key.take().unwrap_or_default();
                child(path, &name)
            }
            Some(Frame::Sequence { path, next }) => {
                *next += 1;
                format!("{path}[{}]", *next - 1)
            }
        }
    }

    fn record_value(&mut self, path: &str, at: Position, scalar: bool) {
        let entry = self.entries.entry(path.to_owned()).or_default();
        if entry.value.is_none() {
            entry.value = Some(at);
            entry.scalar = scalar;
        }
    }
}

impl MarkedEventReceiver for Walker {
    fn on_event(&mut self, event: Event, mark: Marker) {
        if self.done || self.unsupported {
            return;
        }
        let at = Position::of(mark);
        match event {
            Event::DocumentEnd => self.done = true,
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
                if self.stack.is_empty() {
                    self.done = true;
                }
            }
            Event::Scalar(..)
            | Event::Alias(_)
            | Event::MappingStart(..)
            | Event::SequenceStart(..) => {
                if self.take_key(&event, at) {
                    return;
                }
                let path = self.value_path();
                match event {
                    Event::MappingStart(..) => {
                        self.record_value(&path, at, false);
                        self.stack.push(Frame::Mapping {
                            path,
                            key: None,
                            seen: HashMap::new(),
                        });
                    }
                    Event::SequenceStart(..) => {
                        self.record_value(&path, at, false);
                        self.stack.push(Frame::Sequence { path, next: 0 });
                    }
                    _ => self.record_value(&path, at, true),
                }
            }
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentStart => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(line: usize, column: usize) -> Option<Position> {
        Some(Position { line, column })
    }

    const TEXT: &str = "\
platform:
  url: https://example.com
policy:
  delete_users:
    max_percent: 150
mapping:
  customer:
    labels: [a, b]
    static_labels:
      - x
      - y
";

    #[test]
    fn scalars_are_located_by_their_value_and_mappings_by_their_key() {
        let p = Positions::read(TEXT).unwrap();
        assert_eq!(p.locate("platform.url"), at(2, 8));
        assert_eq!(p.locate("policy.delete_users.max_percent"), at(5, 18));
        assert_eq!(p.locate("policy.delete_users"), at(4, 3));
        assert_eq!(p.locate("mapping.customer.labels"), at(8, 5));
        assert_eq!(p.locate("mapping.customer.labels[1]"), at(8, 17));
        assert_eq!(p.locate("mapping.customer.static_labels[1]"), at(11, 9));
    }

    #[test]
    fn a_missing_key_is_located_at_its_nearest_ancestor() {
        let p = Positions::read(TEXT).unwrap();
        assert_eq!(p.locate("policy.delete_customers.max_count"), at(3, 1));
        assert_eq!(p.locate("schedule"), at(1, 1));
    }

    #[test]
    fn a_duplicate_key_is_placed_at_its_own_line() {
        let text = "a: 1\nb:\n  c: 1\n  d: 2\n  c: 3\n";
        let dup = Positions::read(text).unwrap_err();
        assert_eq!(dup.key, "b.c");
        assert_eq!(dup.at, Position { line: 5, column: 3 });
        assert_eq!(dup.first, Position { line: 3, column: 3 });
    }

    #[test]
    fn text_that_is_not_yaml_gives_no_positions() {
        let p = Positions::read("a: [1, 2\n").unwrap();
        assert_eq!(p.locate("a"), None);
    }
}
