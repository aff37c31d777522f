//! The `key: value` file of upstream's `saslauthd.conf` (`-O PATH`), shared by the
//! mechanisms that read one (ldap, kerberos5). Pure parsing: the caller reads the file.
//!
//! Syntax, as upstream's parser (`cfile.c`, `lak.c`) accepts it: blank lines and lines whose
//! first non-blank character is `#` are skipped; leading blanks are skipped; a key is
//! `[A-Za-z0-9_-]+`, case-insensitive (kept lower-cased here), immediately followed by `:`;
//! blanks after the colon are skipped; the value is the rest of the line and must not be
//! empty. Unlike upstream, a line that breaks these rules is an error naming its number
//! (upstream silently makes the whole file unusable), and a trailing CR (a CRLF file) is not
//! part of the value. Other trailing blanks are kept, as upstream keeps them: each mechanism
//! decides per key whether they matter.
//!
//! Which occurrence of a repeated key counts differs between upstream's mechanisms (ldap:
//! the last, kerberos5: the first), so [`ConfFile`] keeps every entry and offers both.
#![forbid(unsafe_code)]

use std::fmt;
use std::path::{Path, PathBuf};

/// One `key: value` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// 1-based line number.
    pub line: usize,
    /// Lower-cased.
    pub key: String,
    pub value: String,
}

/// A parsed file, entries in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfFile {
    pub path: PathBuf,
    pub entries: Vec<Entry>,
}

/// Why a file can't be used: the path, and the line (0 when the whole file is at fault,
/// e.g. it can't be read) with what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfError {
    pub path: PathBuf,
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ConfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.path.display(), self.message)
        } else {
            write!(
                f,
                "{}, line {}: {}",
                self.path.display(),
                self.line,
                self.message
            )
        }
    }
}

impl std::error::Error for ConfError {}

impl ConfFile {
    /// Reads and parses `path`.
    pub fn read(path: &Path) -> Result<ConfFile, ConfError> {
        let bytes = std::fs::read(path).map_err(|error| ConfError {
            path: path.to_path_buf(),
            line: 0,
            message: format!("cannot read the file: {error}"),
        })?;
        let text = String::from_utf8(bytes).map_err(|error| {
            let line = 1 + error.as_bytes()[..error.utf8_error().valid_up_to()]
                .iter()
                .filter(|&&b| b == b'\n')
                .count();
            ConfError {
                path: path.to_path_buf(),
                line,
                message: "not valid UTF-8".to_string(),
            }
        })?;
        ConfFile::parse(path, &text)
    }

    /// Parses `text`, the contents of `path` (named in errors).
    pub fn parse(path: &Path, text: &str) -> Result<ConfFile, ConfError> {
        let mut entries = Vec::new();
        for (index, raw) in text.split('\n').enumerate() {
            let line = index + 1;
            let error = |message: String| ConfError {
                path: path.to_path_buf(),
                line,
                message,
            };
            let content = raw.strip_suffix('\r').unwrap_or(raw);
            let content = content.trim_start_matches([' ', '\t']);
            if content.is_empty() || content.starts_with('#') {
                continue;
            }
            let key_len = content
                .bytes()
                .take_while(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-')
                .count();
            let (key, rest) = content.split_at(key_len);
            if key.is_empty() {
                return Err(error(
                    "expected `key: value` (a key of letters, digits, `_` or `-`)".to_string(),
                ));
            }
            let Some(value) = rest.strip_prefix(':') else {
                return Err(error(format!(
                    "key `{key}` must be followed directly by `:` (no blank before it)"
                )));
            };
            let value = value.trim_start_matches([' ', '\t']);
            if value.is_empty() {
                return Err(error(format!("key `{key}` has an empty value")));
            }
            entries.push(Entry {
                line,
                key: key.to_ascii_lowercase(),
                value: value.to_string(),
            });
        }
        Ok(ConfFile {
            path: path.to_path_buf(),
            entries,
        })
    }

    /// The first entry for `key` (lower-case), as kerberos5 reads the file.
    pub fn first(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().find(|entry| entry.key == key)
    }

    /// The last entry for `key` (lower-case), as ldap reads the file.
    pub fn last(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().rev().find(|entry| entry.key == key)
    }

    /// Keys present that are not in `known` (each once, in file order), for a log line.
    pub fn unknown_keys(&self, known: impl Fn(&str) -> bool) -> Vec<&str> {
        let mut unknown: Vec<&str> = Vec::new();
        for entry in &self.entries {
            if !known(&entry.key) && !unknown.contains(&entry.key.as_str()) {
                unknown.push(&entry.key);
            }
        }
        unknown
    }

    /// An error about `entry`'s value, naming the file, line and key.
    pub fn invalid(&self, entry: &Entry, message: impl fmt::Display) -> ConfError {
        ConfError {
            path: self.path.clone(),
            line: entry.line,
            message: format!("{}: {message}", entry.key),
        }
    }
}

/// A switch value: `yes`/`no`, `true`/`false`, `on`/`off`, `1`/`0`, in any case (upstream
/// reads only the first character, case-sensitively, and takes `Yes` for *off*). `None` for
/// any other word.
pub fn switch(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "yes" | "true" | "on" | "1" => Some(true),
        "no" | "false" | "off" | "0" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ConfFile, ConfError> {
        ConfFile::parse(Path::new("/etc/saslauthd.conf"), text)
    }

    #[test]
    fn keys_values_comments_and_blanks() {
        let file = parse(
            "# comment\n\n   \t# indented comment\nLDAP_Servers: ldap://a ldap://b\n  \
             ldap_filter:\t(uid=%u)  \r\nldap_bind-dn:x: y\n",
        )
        .unwrap();
        let pairs: Vec<(usize, &str, &str)> = file
            .entries
            .iter()
            .map(|e| (e.line, e.key.as_str(), e.value.as_str()))
            .collect();
        assert_eq!(
            pairs,
            [
                (4, "ldap_servers", "ldap://a ldap://b"),
                (5, "ldap_filter", "(uid=%u)  "),
                (6, "ldap_bind-dn", "x: y"),
            ]
        );
    }

    #[test]
    fn first_and_last_occurrence() {
        let file = parse("k: one\nk: two\n").unwrap();
        assert_eq!(file.first("k").unwrap().value, "one");
        assert_eq!(file.last("k").unwrap().value, "two");
        assert!(file.first("other").is_none());
    }

    #[test]
    fn malformed_lines_name_the_line() {
        let error = parse("a: 1\nkey : value\n").unwrap_err();
        assert_eq!(error.line, 2);
        assert!(error.message.contains("`key`"), "{error}");
        assert_eq!(
            error.to_string(),
            "/etc/saslauthd.conf, line 2: key `key` must be followed directly by `:` \
             (no blank before it)"
        );
        assert_eq!(parse("a: 1\nb:\n").unwrap_err().line, 2);
        assert_eq!(parse("b:   \r\n").unwrap_err().line, 1);
        assert_eq!(parse(": value\n").unwrap_err().line, 1);
        assert_eq!(parse("ke y: v\n").unwrap_err().line, 1);
    }

    #[test]
    fn unknown_keys_once_each_in_order() {
        let file = parse("log_level: 10\nldap_servers: x\nldap_port: 1\nlog_level: 3\n").unwrap();
        assert_eq!(
            file.unknown_keys(|k| k == "ldap_servers"),
            ["log_level", "ldap_port"]
        );
    }

    #[test]
    fn invalid_values_name_file_line_and_key() {
        let file = parse("\nldap_timeout: soon\n").unwrap();
        let entry = file.last("ldap_timeout").unwrap();
        assert_eq!(
            file.invalid(entry, "not a number of seconds").to_string(),
            "/etc/saslauthd.conf, line 2: ldap_timeout: not a number of seconds"
        );
    }

    #[test]
    fn switches_in_any_case() {
        for on in ["yes", "Yes", "TRUE", "On", "1", " yes "] {
            assert_eq!(switch(on), Some(true), "{on}");
        }
        for off in ["no", "NO", "false", "Off", "0"] {
            assert_eq!(switch(off), Some(false), "{off}");
        }
        for neither in ["demand", "y", "", "2"] {
            assert_eq!(switch(neither), None, "{neither}");
        }
    }

    #[test]
    fn unreadable_and_non_utf8_files() {
        let missing = ConfFile::read(Path::new("/nonexistent/saslauthd.conf")).unwrap_err();
        assert_eq!(missing.line, 0);
        assert!(
            missing
                .to_string()
                .starts_with("/nonexistent/saslauthd.conf: cannot read")
        );
        let dir = std::env::temp_dir().join(format!("conf-file-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bad.conf");
        std::fs::write(&path, b"a: 1\nb: \xff\n").unwrap();
        assert_eq!(ConfFile::read(&path).unwrap_err().line, 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
