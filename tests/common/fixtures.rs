//! Passwords of the fixture users in `tests/fixtures/{passwd,shadow}` (and
//! `tests/fixtures/getpwent/passwd`, whose hashes are shadow's), one constant per user,
//! as documented in `docs/test-contract.md` ("Fixture users"). `nohash` and `star` take any
//! password and have none here.

/// `yuser`: `$y$` yescrypt.
pub const YUSER_PW: &str = "Yes-Crypt-pw1";
/// `suser`: `$6$` sha512crypt.
pub const SUSER_PW: &str = "Sha-512-pw1";
/// `buser`: `$2b$` bcrypt.
pub const BUSER_PW: &str = "Bcrypt-pw1";
/// `muser`: `$1$` md5crypt.
pub const MUSER_PW: &str = "Md5-crypt-pw1";
/// `special`: space, double quote, backslash, UTF-8 (`$y$`).
pub const SPECIAL_PW: &str = "pä ss \"q\\ €";
/// `locked`: `!` + a `$6$` hash of this password.
pub const LOCKED_PW: &str = "Locked-pw1";
/// `expired`: account expired (day 1).
pub const EXPIRED_PW: &str = "Expired-pw1";
/// `pwexpired`: password expired (last change day 1, max age 10 days).
pub const PWEXPIRED_PW: &str = "Pw-expired-pw1";
/// `user@example.org` (for `-r`).
pub const REALM_PW: &str = "Realm-pw1";
/// `gdes` in `tests/fixtures/getpwent/passwd`: a DES hash (`abrO.tq8awQas`).
pub const DES_PW: &str = "Des-pw12";

/// The passwords above, every one a fixture user has (none may appear in a daemon log).
pub const FIXTURE_PASSWORDS: &[&str] = &[
    YUSER_PW,
    SUSER_PW,
    BUSER_PW,
    MUSER_PW,
    SPECIAL_PW,
    LOCKED_PW,
    EXPIRED_PW,
    PWEXPIRED_PW,
    REALM_PW,
    DES_PW,
];

/// `long`: 511 × `L`, the longest password libxcrypt hashes (CRYPT_MAX_PASSPHRASE_SIZE is
/// 512, NUL included), so the longest a shadow user can have.
pub fn long_pw() -> String {
    "L".repeat(511)
}
