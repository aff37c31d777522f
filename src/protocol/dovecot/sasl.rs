//! The server side of the SASL mechanisms PLAIN and LOGIN as the Dovecot protocol carries
//! them, pure: decoded client responses in, challenges or credentials out. And what
//! libsasl would have sent saslauthd for the same SMTP AUTH ([`SaslauthdLogin`]), so an
//! account gets the same verdict through either socket.
//!
//! Dovecot's rules, kept: PLAIN is `[authzid] NUL authcid NUL password` with exactly two
//! NULs, an authzid that is empty or equal to the authcid (no proxy authorisation), and a
//! non-empty authcid; LOGIN asks `Username:` (unless the initial response is the
//! username), then `Password:`, and refuses a NUL in either.
#![forbid(unsafe_code)]

use super::Mechanism;
use crate::secret::Password;

/// LOGIN's first challenge.
pub const USERNAME_PROMPT: &[u8] = b"Username:";
/// LOGIN's second challenge.
pub const PASSWORD_PROMPT: &[u8] = b"Password:";

/// An exchange waiting for the client's next response.
#[derive(Debug, PartialEq, Eq)]
pub enum Exchange {
    /// PLAIN asked for its message with an empty challenge.
    Plain,
    /// LOGIN asked for the username.
    LoginUsername,
    /// LOGIN asked for the password of `username`.
    LoginPassword { username: Vec<u8> },
}

/// What the server does next.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Send `challenge` (a `CONT` line) and continue with `next` when the client answers.
    Challenge {
        next: Exchange,
        challenge: &'static [u8],
    },
    /// Verify `password` for the SASL authentication identity `authcid`.
    Verify {
        authcid: Vec<u8>,
        password: Password,
    },
    /// Refuse; `user` is the authentication identity, when the exchange got as far.
    Fail { user: Option<Vec<u8>> },
}

/// Starts `mechanism` with the decoded initial response, if the client sent one.
pub fn start(mechanism: Mechanism, initial: Option<Password>) -> Step {
    match (mechanism, initial) {
        (Mechanism::Plain, None) => Step::Challenge {
            next: Exchange::Plain,
            challenge: b"",
        },
        (Mechanism::Plain, Some(message)) => plain(message.as_bytes()),
        (Mechanism::Login, Some(username)) if !username.is_empty() => login_username(&username),
        (Mechanism::Login, _) => Step::Challenge {
            next: Exchange::LoginUsername,
            challenge: USERNAME_PROMPT,
        },
    }
}

/// Continues `exchange` with the client's decoded response.
pub fn respond(exchange: Exchange, response: Password) -> Step {
    match exchange {
        Exchange::Plain => plain(response.as_bytes()),
        Exchange::LoginUsername => login_username(&response),
        Exchange::LoginPassword { username } => {
            if response.as_bytes().contains(&0) {
                Step::Fail {
                    user: Some(username),
                }
            } else {
                Step::Verify {
                    authcid: username,
                    password: response,
                }
            }
        }
    }
}

fn plain(message: &[u8]) -> Step {
    let mut parts = message.splitn(3, |&b| b == 0);
    let (Some(authzid), Some(authcid), Some(password)) = (parts.next(), parts.next(), parts.next())
    else {
        return Step::Fail { user: None };
    };
    if password.contains(&0) || authcid.is_empty() {
        return Step::Fail { user: None };
    }
    if !authzid.is_empty() && authzid != authcid {
        return Step::Fail {
            user: Some(authcid.to_vec()),
        };
    }
    Step::Verify {
        authcid: authcid.to_vec(),
        password: Password::new(password.to_vec()),
    }
}

fn login_username(username: &Password) -> Step {
    let username = username.as_bytes();
    if username.is_empty() || username.contains(&0) {
        return Step::Fail { user: None };
    }
    Step::Challenge {
        next: Exchange::LoginPassword {
            username: username.to_vec(),
        },
        challenge: PASSWORD_PROMPT,
    }
}

/// The login and realm libsasl 2.1.28 would send saslauthd for the SASL identity
/// `authcid` (with Postfix's default `smtpd_sasl_local_domain`, empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslauthdLogin {
    /// The identity without surrounding whitespace: libsasl's canonical user name, which
    /// Postfix records as `sasl_username`, so the server echoes it in `user=`.
    pub user: Vec<u8>,
    /// Before the last `@` (all of it without one).
    pub login: Vec<u8>,
    /// After the last `@` (empty without one).
    pub realm: Vec<u8>,
}

impl SaslauthdLogin {
    /// libsasl trims C `isspace` characters from both ends (an all-whitespace name fails:
    /// `None`), then splits at the last `@`.
    pub fn from_authcid(authcid: &[u8]) -> Option<SaslauthdLogin> {
        let is_space = |b: &u8| matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r');
        let start = authcid.iter().position(|b| !is_space(b))?;
        let end = authcid.iter().rposition(|b| !is_space(b))? + 1;
        let user = &authcid[start..end];
        let (login, realm) = match user.iter().rposition(|&b| b == b'@') {
            Some(at) => (&user[..at], &user[at + 1..]),
            None => (user, &b""[..]),
        };
        Some(SaslauthdLogin {
            user: user.to_vec(),
            login: login.to_vec(),
            realm: realm.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pw(bytes: &[u8]) -> Password {
        Password::new(bytes.to_vec())
    }

    fn verify(authcid: &[u8], password: &[u8]) -> Step {
        Step::Verify {
            authcid: authcid.to_vec(),
            password: pw(password),
        }
    }

    fn fail(user: Option<&[u8]>) -> Step {
        Step::Fail {
            user: user.map(<[u8]>::to_vec),
        }
    }

    #[test]
    fn plain_with_and_without_an_initial_response() {
        assert_eq!(
            start(Mechanism::Plain, None),
            Step::Challenge {
                next: Exchange::Plain,
                challenge: b""
            }
        );
        assert_eq!(
            start(Mechanism::Plain, Some(pw(b"\0alice\0secret"))),
            verify(b"alice", b"secret")
        );
        assert_eq!(
            respond(Exchange::Plain, pw(b"alice\0alice\0secret")),
            verify(b"alice", b"secret")
        );
        // An empty password is passed on: the core refuses it like on the mux socket.
        assert_eq!(
            respond(Exchange::Plain, pw(b"\0alice\0")),
            verify(b"alice", b"")
        );
    }

    #[test]
    fn plain_refuses_what_dovecot_refuses() {
        for message in [
            &b""[..],
            b"alice",
            b"\0alice",
            b"\0alice\0sec\0ret",
            b"\0\0secret",
        ] {
            assert_eq!(
                start(Mechanism::Plain, Some(pw(message))),
                fail(None),
                "{message:?}"
            );
        }
        // Proxy authorisation: refused, naming the authentication identity.
        assert_eq!(
            start(Mechanism::Plain, Some(pw(b"bob\0alice\0secret"))),
            fail(Some(b"alice"))
        );
    }

    #[test]
    fn login_asks_username_then_password() {
        let username_prompt = Step::Challenge {
            next: Exchange::LoginUsername,
            challenge: USERNAME_PROMPT,
        };
        assert_eq!(start(Mechanism::Login, None), username_prompt);
        assert_eq!(start(Mechanism::Login, Some(pw(b""))), username_prompt);
        let password_prompt = Step::Challenge {
            next: Exchange::LoginPassword {
                username: b"alice".to_vec(),
            },
            challenge: PASSWORD_PROMPT,
        };
        assert_eq!(start(Mechanism::Login, Some(pw(b"alice"))), password_prompt);
        assert_eq!(
            respond(Exchange::LoginUsername, pw(b"alice")),
            password_prompt
        );
        let waiting = Exchange::LoginPassword {
            username: b"alice".to_vec(),
        };
        assert_eq!(respond(waiting, pw(b"s e c")), verify(b"alice", b"s e c"));
    }

    #[test]
    fn login_refuses_nul_and_empty_usernames() {
        assert_eq!(respond(Exchange::LoginUsername, pw(b"")), fail(None));
        assert_eq!(respond(Exchange::LoginUsername, pw(b"al\0ice")), fail(None));
        assert_eq!(start(Mechanism::Login, Some(pw(b"\0"))), fail(None));
        let waiting = Exchange::LoginPassword {
            username: b"alice".to_vec(),
        };
        assert_eq!(respond(waiting, pw(b"sec\0ret")), fail(Some(b"alice")));
    }

    #[test]
    fn saslauthd_login_is_trimmed_and_split_at_the_last_at() {
        let login = |authcid: &[u8]| SaslauthdLogin::from_authcid(authcid);
        let expect = |user: &str, login: &str, realm: &str| {
            Some(SaslauthdLogin {
                user: user.into(),
                login: login.into(),
                realm: realm.into(),
            })
        };
        assert_eq!(login(b"alice"), expect("alice", "alice", ""));
        assert_eq!(
            login(b"alice@example.org"),
            expect("alice@example.org", "alice", "example.org")
        );
        assert_eq!(login(b"a@b@c"), expect("a@b@c", "a@b", "c"));
        assert_eq!(
            login(b" \t alice@x \r\n\x0b\x0c"),
            expect("alice@x", "alice", "x")
        );
        assert_eq!(login(b"al ice"), expect("al ice", "al ice", ""));
        assert_eq!(login(b"@"), expect("@", "", ""));
        assert_eq!(login(b" \t\r\n"), None);
        assert_eq!(login(b""), None);
    }
}
