//! `%` tokens in `ldap_filter`, `ldap_search_base`, `ldap_group_dn`, `ldap_group_filter` and
//! `ldap_group_search_base`, expanded as upstream does, with each inserted value escaped
//! for where it lands.
//!
//! | token | value |
//! |---|---|
//! | `%%` | `%` |
//! | `%u` | the login as received |
//! | `%U` | the login up to the first `@` |
//! | `%d` | the login after the first `@`; nothing when there is none (no realm fallback) |
//! | `%1`…`%9` | the Nth label from the right of the login's domain, or of the realm when the login has none |
//! | `%r` | the realm: the request's, else `ldap_default_realm` |
//! | `%R` | `@` and the realm, or nothing |
//! | `%s` | the service |
//! | `%D` | the user's DN (group filter and group search base only) |
//!
//! Escaping: a value inserted into a search filter gets RFC 4515 escapes for `*`, `(`, `)`,
//! `\` and NUL (upstream's set, lower-case hex like upstream). A value inserted into a DN
//! (the search bases, the group DN, fastbind's DN template) gets RFC 4514 escapes for every
//! character that has a meaning in a DN — `,` `+` `"` `\` `<` `>` `;` `=` `#` and
//! leading/trailing spaces — which upstream gets wrong (it filter-escapes DNs, so a login
//! `a,ou=other` reaches another entry). In both, bytes that are not UTF-8 are hex-escaped,
//! so every result is a valid UTF-8 string. `%D` is already a DN: in a DN position it goes
//! in as is, in a filter it is filter-escaped.
//!
//! Unlike upstream, which silently drops an unknown `%x` and a trailing `%`, a template with
//! either is refused when the file is read ([`Template::parse`]).
#![forbid(unsafe_code)]

use std::fmt;

/// Where an expanded template is used, which decides how values are escaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    Filter,
    Dn,
}

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Login,
    LoginUser,
    LoginDomain,
    Label(u8),
    Realm,
    AtRealm,
    Service,
    UserDn,
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    source: String,
    pieces: Vec<Piece>,
}

/// The request's values a template can refer to.
#[derive(Debug, Clone, Copy)]
pub struct Values<'a> {
    pub login: &'a [u8],
    pub service: &'a [u8],
    /// The request's realm, or `ldap_default_realm` when that is empty.
    pub realm: &'a [u8],
    /// The user's DN, once known (group checks).
    pub user_dn: Option<&'a str>,
}

impl Template {
    /// Parses `source`; `allow_dn` says whether `%D` may appear. The error names the
    /// offending token.
    pub fn parse(source: &str, allow_dn: bool) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut text = String::new();
        let mut chars = source.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                text.push(c);
                continue;
            }
            let piece = match chars.next() {
                None => return Err("ends with a lone `%` (write `%%` for a percent sign)".into()),
                Some('%') => {
                    text.push('%');
                    continue;
                }
                Some('u') => Piece::Login,
                Some('U') => Piece::LoginUser,
                Some('d') => Piece::LoginDomain,
                Some('r') => Piece::Realm,
                Some('R') => Piece::AtRealm,
                Some('s') => Piece::Service,
                Some('D') if allow_dn => Piece::UserDn,
                Some('D') => {
                    return Err(
                        "`%D` (the user's DN) is only known in ldap_group_filter and \
                         ldap_group_search_base"
                            .into(),
                    );
                }
                Some(digit @ '1'..='9') => Piece::Label(digit as u8 - b'0'),
                Some(other) => {
                    return Err(format!(
                        "unknown token `%{other}` (known: %% %u %U %d %1-%9 %r %R %s{})",
                        if allow_dn { " %D" } else { "" }
                    ));
                }
            };
            if !text.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut text)));
            }
            pieces.push(piece);
        }
        if !text.is_empty() {
            pieces.push(Piece::Text(text));
        }
        Ok(Template {
            source: source.to_string(),
            pieces,
        })
    }

    /// The template as written in the file.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// The template with `values` inserted, escaped for `position`.
    pub fn expand(&self, values: &Values<'_>, position: Position) -> String {
        let mut out = String::new();
        let (user, domain) = split_login(values.login);
        for piece in &self.pieces {
            let value: &[u8] = match piece {
                Piece::Text(text) => {
                    out.push_str(text);
                    continue;
                }
                Piece::UserDn => {
                    let dn = values.user_dn.unwrap_or("");
                    match position {
                        Position::Dn => out.push_str(dn),
                        Position::Filter => escape(dn.as_bytes(), position, &mut out),
                    }
                    continue;
                }
                Piece::AtRealm => {
                    if !values.realm.is_empty() {
                        out.push('@');
                        escape(values.realm, position, &mut out);
                    }
                    continue;
                }
                Piece::Login => values.login,
                Piece::LoginUser => user,
                Piece::LoginDomain => domain.unwrap_or(b""),
                Piece::Realm => values.realm,
                Piece::Service => values.service,
                Piece::Label(n) => {
                    let source = domain.unwrap_or(values.realm);
                    label(source, *n).unwrap_or(b"")
                }
            };
            escape(value, position, &mut out);
        }
        out
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// The login's user part and, when it has a non-empty one, its domain (after the first `@`).
fn split_login(login: &[u8]) -> (&[u8], Option<&[u8]>) {
    match login.iter().position(|&b| b == b'@') {
        Some(at) => {
            let domain = &login[at + 1..];
            (&login[..at], (!domain.is_empty()).then_some(domain))
        }
        None => (login, None),
    }
}

/// The `n`th dot-separated label from the right (1 = the top level).
fn label(domain: &[u8], n: u8) -> Option<&[u8]> {
    domain
        .rsplit(|&b| b == b'.')
        .nth(usize::from(n) - 1)
        .filter(|label| !label.is_empty())
}

/// Appends `value` to `out`, escaped for `position`.
fn escape(value: &[u8], position: Position, out: &mut String) {
    let last = value.len().saturating_sub(1);
    let mut i = 0;
    for chunk in value.utf8_chunks() {
        for c in chunk.valid().chars() {
            let special = match position {
                Position::Filter => matches!(c, '*' | '(' | ')' | '\\' | '\0'),
                Position::Dn => {
                    matches!(
                        c,
                        ',' | '+' | '"' | '\\' | '<' | '>' | ';' | '=' | '\0' | '#'
                    ) || (c == ' ' && (i == 0 || i == last))
                }
            };
            if special {
                out.push_str(&format!("\\{:02x}", c as u32));
            } else {
                out.push(c);
            }
            i += c.len_utf8();
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\{b:02x}"));
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values<'a>(login: &'a str, realm: &'a str) -> Values<'a> {
        Values {
            login: login.as_bytes(),
            service: b"smtp",
            realm: realm.as_bytes(),
            user_dn: None,
        }
    }

    fn filter(template: &str, v: &Values<'_>) -> String {
        Template::parse(template, true)
            .unwrap()
            .expand(v, Position::Filter)
    }

    fn dn(template: &str, v: &Values<'_>) -> String {
        Template::parse(template, true)
            .unwrap()
            .expand(v, Position::Dn)
    }

    #[test]
    fn every_token() {
        let v = values("alice@mail.example.net", "example.org");
        assert_eq!(
            filter("%u|%U|%d|%r|%R|%s|%1|%2|%3|%4|%%", &v),
            "alice@mail.example.net|alice|mail.example.net|example.org|@example.org|smtp|net|example|mail||%"
        );
        // No domain in the login: %d is empty, the labels come from the realm.
        let v = values("vuser", "example.net");
        assert_eq!(filter("ou=%d,%2.%1", &v), "ou=,example.net");
        // Neither: nothing.
        let v = values("vuser", "");
        assert_eq!(filter("[%d][%1][%r][%R]", &v), "[][][][]");
        // The login's domain wins over the realm.
        let v = values("vuser@example.net", "example.com");
        assert_eq!(filter("%2.%1", &v), "example.net");
        // A trailing `@` is no domain.
        let v = values("vuser@", "example.com");
        assert_eq!(filter("%U|%d|%1", &v), "vuser||com");
    }

    #[test]
    fn upstream_examples() {
        let v = values("ldalice", "example.org");
        assert_eq!(
            filter("(&(mail=%U%R)(businessCategory=%s))", &v),
            "(&(mail=ldalice@example.org)(businessCategory=smtp))"
        );
    }

    #[test]
    fn filter_escaping() {
        for (login, want) in [
            ("ldali*", "(uid=ldali\\2a)"),
            ("*", "(uid=\\2a)"),
            ("ldalic\\65", "(uid=ldalic\\5c65)"),
            (
                "lddisabled)(|(uid=lddisabled",
                "(uid=lddisabled\\29\\28|\\28uid=lddisabled)",
            ),
            ("a,b=c", "(uid=a,b=c)"),
            ("nul\0x", "(uid=nul\\00x)"),
        ] {
            assert_eq!(filter("(uid=%u)", &values(login, "")), want, "{login:?}");
        }
        let v = Values {
            login: b"bad\xffutf8\xc3",
            ..values("", "")
        };
        assert_eq!(filter("(uid=%u)", &v), "(uid=bad\\ffutf8\\c3)");
        assert_eq!(filter("(cn=%u)", &values("jörg", "")), "(cn=jörg)");
    }

    #[test]
    fn dn_escaping() {
        let t = "uid=%u,ou=people,dc=example,dc=org";
        assert_eq!(
            dn(t, &values("ldsub,ou=contractors", "")),
            "uid=ldsub\\2cou\\3dcontractors,ou=people,dc=example,dc=org"
        );
        assert_eq!(
            dn(t, &values("a+b\"c\\d<e>f;g#h", "")),
            "uid=a\\2bb\\22c\\5cd\\3ce\\3ef\\3bg\\23h,ou=people,dc=example,dc=org"
        );
        assert_eq!(
            dn(t, &values(" x y ", "")),
            "uid=\\20x y\\20,ou=people,dc=example,dc=org"
        );
        // Filter metacharacters mean nothing in a DN.
        assert_eq!(
            dn(t, &values("a*(b)", "")),
            "uid=a*(b),ou=people,dc=example,dc=org"
        );
        assert_eq!(
            dn("ou=%d,dc=hosted", &values("u@evil,dc=x", "")),
            "ou=evil\\2cdc\\3dx,dc=hosted"
        );
    }

    #[test]
    fn the_user_dn() {
        let v = Values {
            user_dn: Some("uid=a(1),ou=people,dc=example,dc=org"),
            ..values("a", "")
        };
        assert_eq!(
            filter("(member=%D)", &v),
            "(member=uid=a\\281\\29,ou=people,dc=example,dc=org)"
        );
        assert_eq!(dn("%D", &v), "uid=a(1),ou=people,dc=example,dc=org");
    }

    #[test]
    fn bad_templates_are_refused() {
        let err = |t: &str, dn: bool| Template::parse(t, dn).unwrap_err();
        assert!(err("(uid=%x)", true).contains("unknown token `%x`"));
        assert!(err("(uid=%u)%", true).contains("lone `%`"));
        assert!(err("(uid=%D)", false).contains("only known in"));
        assert!(!err("%0", false).contains("%D"));
        assert!(Template::parse("100%% (uid=%u)", false).is_ok());
    }
}
