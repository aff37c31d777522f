//! kerberos5's settings from upstream's `saslauthd.conf` (`-O PATH`, else
//! /etc/saslauthd.conf when it exists; the first occurrence of a key wins, as upstream's
//! kerberos5 reads it) and the principal a request is checked as.
//!
//! Keys: `krb5_keytab` (default: libkrb5's default keytab), `krb5_verify_principal`
//! (default `host`), `krb5_servername` (default: this host's name), `krb5_conv_krb4_instance`
//! (a switch, default off) and `krb5_<service>_instance` (an instance forced for requests
//! naming that service, e.g. `krb5_imap_instance: mail`). Other `krb5_` keys are reported
//! and ignored; keys of other mechanisms (`ldap_...`) share the file and are ignored.
//!
//! # The principal, exactly
//! From the login (already `login@realm` under `-r`) and the request's realm `R`:
//! 1. *Ours*: when `R` is not empty and the login ends in `@R` (byte for byte, the `@` not
//!    escaped by a backslash), that suffix is removed — it is what `-r` added, or what a
//!    client sent as `user@R` together with realm `R`. Upstream keeps it and appends `@R`
//!    again (issue #832): every such request got `NO saslauthd internal error`.
//! 2. `krb5_conv_krb4_instance: yes`: the first `.` becomes `/` (`john.admin` →
//!    `john/admin`).
//! 3. A forced instance `I` for the request's service: appended as `/I` when the name has
//!    no `/`; when it has one, the text after the first `/` must be exactly `I`, else
//!    `NO saslauthd principal name error`.
//! 4. When `R` is not empty, `@R` is appended (once). Any other `@` is left alone, as
//!    upstream: `a@B` with realm `C` becomes `a@B@C`, which libkrb5 refuses (`NO saslauthd
//!    internal error`). An empty realm leaves the name without one: libkrb5 then uses
//!    `default_realm`. Nothing is case-folded.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};

use crate::log_warn;
use crate::mech::conf_file::{self, ConfError, ConfFile};

/// Read when there is no `-O` and the file exists.
pub const DEFAULT_CONF: &str = "/etc/saslauthd.conf";
const KEYTAB: &str = "krb5_keytab";
const VERIFY_PRINCIPAL: &str = "krb5_verify_principal";
const SERVERNAME: &str = "krb5_servername";
const CONV_KRB4_INSTANCE: &str = "krb5_conv_krb4_instance";
const DEFAULT_VERIFY_PRINCIPAL: &str = "host";

/// What kerberos5 reads from the file.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Config {
    /// The file read, if any.
    pub path: Option<PathBuf>,
    /// `krb5_keytab` (`None`: libkrb5's default keytab).
    pub keytab: Option<String>,
    /// `krb5_verify_principal`: the service of the principal whose key proves the KDC.
    pub verify_principal: String,
    /// `krb5_servername` (`None`: this host's name, as libkrb5 finds it).
    pub servername: Option<String>,
    pub conv_krb4_instance: bool,
    /// `krb5_<service>_instance`, first occurrence of each: (service, instance).
    instances: Vec<(String, String)>,
}

/// The login can't carry the instance forced for its service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrincipalNameError;

impl Config {
    /// The settings for `-O` (`option`): that file, which must be readable, else
    /// [`DEFAULT_CONF`] if it exists, else the defaults. The error is why startup fails.
    pub fn load(option: Option<&str>) -> Result<Config, String> {
        let path = match option {
            Some(path) => PathBuf::from(path),
            None if Path::new(DEFAULT_CONF).exists() => PathBuf::from(DEFAULT_CONF),
            None => return Ok(Config::from_file(&ConfFile::default()).unwrap_or_default()),
        };
        let file = ConfFile::read(&path).map_err(|e| e.to_string())?;
        let mut config = Config::from_file(&file).map_err(|e| e.to_string())?;
        config.path = Some(path);
        Ok(config)
    }

    /// The settings in `file`; warns about `krb5_` keys it does not know and values
    /// ending in blanks (kept, as upstream keeps them).
    pub fn from_file(file: &ConfFile) -> Result<Config, ConfError> {
        let value = |key: &str| file.first(key).map(|entry| entry.value.clone());
        let conv_krb4_instance = match file.first(CONV_KRB4_INSTANCE) {
            None => false,
            Some(entry) => conf_file::switch(&entry.value).ok_or_else(|| {
                file.invalid(entry, "expected yes or no (true/false, on/off, 1/0)")
            })?,
        };
        let mut instances: Vec<(String, String)> = Vec::new();
        for entry in &file.entries {
            let Some(service) = instance_service(&entry.key) else {
                continue;
            };
            if !instances.iter().any(|(known, _)| known == service) {
                instances.push((service.to_string(), entry.value.clone()));
            }
        }
        let known = |key: &str| {
            !key.starts_with("krb5_")
                || [KEYTAB, VERIFY_PRINCIPAL, SERVERNAME, CONV_KRB4_INSTANCE].contains(&key)
                || instance_service(key).is_some()
        };
        for key in file.unknown_keys(known) {
            log_warn!(
                "kerberos5: {}: unknown key {key}; ignored",
                file.path.display()
            );
        }
        for entry in file.entries.iter().filter(|e| e.key.starts_with("krb5_")) {
            if entry.value.ends_with([' ', '\t']) {
                log_warn!(
                    "kerberos5: {}, line {}: the value of {} ends in blanks, which are part \
                     of it (as upstream reads it)",
                    file.path.display(),
                    entry.line,
                    entry.key
                );
            }
        }
        Ok(Config {
            path: None,
            keytab: value(KEYTAB),
            verify_principal: value(VERIFY_PRINCIPAL)
                .unwrap_or_else(|| DEFAULT_VERIFY_PRINCIPAL.to_string()),
            servername: value(SERVERNAME),
            conv_krb4_instance,
            instances,
        })
    }

    /// The instance forced for `service`, if the file names one.
    fn instance(&self, service: &[u8]) -> Option<&str> {
        self.instances
            .iter()
            .find(|(known, _)| known.as_bytes() == service)
            .map(|(_, instance)| instance.as_str())
    }

    /// The principal to check `login` as (see the module's documentation).
    pub fn principal(
        &self,
        login: &[u8],
        service: &[u8],
        realm: &[u8],
    ) -> Result<Vec<u8>, PrincipalNameError> {
        let mut name = without_realm(login, realm).to_vec();
        if self.conv_krb4_instance
            && let Some(dot) = name.iter().position(|&b| b == b'.')
        {
            name[dot] = b'/';
        }
        if let Some(instance) = self.instance(service) {
            match name.iter().position(|&b| b == b'/') {
                None => {
                    name.push(b'/');
                    name.extend_from_slice(instance.as_bytes());
                }
                Some(slash) if &name[slash + 1..] == instance.as_bytes() => {}
                Some(_) => return Err(PrincipalNameError),
            }
        }
        if !realm.is_empty() {
            name.push(b'@');
            name.extend_from_slice(realm);
        }
        Ok(name)
    }
}

/// `imap` for `krb5_imap_instance` (but not for `krb5_conv_krb4_instance`).
fn instance_service(key: &str) -> Option<&str> {
    if key == CONV_KRB4_INSTANCE {
        return None;
    }
    key.strip_prefix("krb5_")?
        .strip_suffix("_instance")
        .filter(|service| !service.is_empty())
}

/// `login` without a trailing, unescaped `@realm` (realm not empty).
fn without_realm<'a>(login: &'a [u8], realm: &[u8]) -> &'a [u8] {
    if realm.is_empty() || login.len() <= realm.len() + 1 {
        return login;
    }
    let at = login.len() - realm.len() - 1;
    if login[at] != b'@' || &login[at + 1..] != realm {
        return login;
    }
    let backslashes = login[..at]
        .iter()
        .rev()
        .take_while(|&&b| b == b'\\')
        .count();
    if backslashes % 2 == 1 {
        return login;
    }
    &login[..at]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        let file = ConfFile::parse(Path::new("/etc/saslauthd.conf"), text).unwrap();
        Config::from_file(&file).unwrap()
    }

    fn principal(config: &Config, login: &str, service: &str, realm: &str) -> String {
        match config.principal(login.as_bytes(), service.as_bytes(), realm.as_bytes()) {
            Ok(name) => String::from_utf8(name).unwrap(),
            Err(PrincipalNameError) => "principal name error".to_string(),
        }
    }

    #[test]
    fn defaults() {
        let c = config("");
        assert_eq!(c.keytab, None);
        assert_eq!(c.verify_principal, "host");
        assert_eq!(c.servername, None);
        assert!(!c.conv_krb4_instance);
        assert_eq!(Config::from_file(&ConfFile::default()).unwrap(), c);
    }

    #[test]
    fn first_occurrence_wins_and_other_mechanisms_keys_are_ignored() {
        let c = config(
            "ldap_servers: ldap://x\nkrb5_keytab: /etc/one.keytab\nKRB5_KEYTAB: /etc/two\n\
             krb5_verify_principal: smtp\nkrb5_servername: mail.example.test\n\
             krb5_imap_instance: mail\nkrb5_imap_instance: other\n",
        );
        assert_eq!(c.keytab.as_deref(), Some("/etc/one.keytab"));
        assert_eq!(c.verify_principal, "smtp");
        assert_eq!(c.servername.as_deref(), Some("mail.example.test"));
        assert_eq!(c.instance(b"imap"), Some("mail"));
        assert_eq!(c.instance(b"IMAP"), None, "services are matched as sent");
        assert_eq!(c.instance(b"smtp"), None);
    }

    #[test]
    fn trailing_blanks_stay_part_of_values() {
        let c = config("krb5_keytab: /etc/krb5.keytab  \n");
        assert_eq!(c.keytab.as_deref(), Some("/etc/krb5.keytab  "));
    }

    #[test]
    fn switches_must_be_words_we_know() {
        assert!(config("krb5_conv_krb4_instance: yes\n").conv_krb4_instance);
        assert!(!config("krb5_conv_krb4_instance: Off\n").conv_krb4_instance);
        let file =
            ConfFile::parse(Path::new("/x.conf"), "\nkrb5_conv_krb4_instance: maybe\n").unwrap();
        let error = Config::from_file(&file).unwrap_err();
        assert_eq!(error.line, 2);
        assert!(
            error.to_string().contains("krb5_conv_krb4_instance"),
            "{error}"
        );
    }

    #[test]
    fn the_realm_is_appended_once() {
        let c = config("");
        assert_eq!(principal(&c, "kuser", "imap", ""), "kuser");
        assert_eq!(
            principal(&c, "kuser", "imap", "EXAMPLE.TEST"),
            "kuser@EXAMPLE.TEST"
        );
        // -r made the login `kuser@EXAMPLE.TEST`: not doubled (upstream #832).
        assert_eq!(
            principal(&c, "kuser@EXAMPLE.TEST", "imap", "EXAMPLE.TEST"),
            "kuser@EXAMPLE.TEST"
        );
        // Another realm in the login, or another case: appended, as upstream.
        assert_eq!(
            principal(&c, "kuser@OTHER.TEST", "imap", "EXAMPLE.TEST"),
            "kuser@OTHER.TEST@EXAMPLE.TEST"
        );
        assert_eq!(
            principal(&c, "kuser@example.test", "imap", "EXAMPLE.TEST"),
            "kuser@example.test@EXAMPLE.TEST"
        );
        // An escaped @ is part of the name.
        assert_eq!(principal(&c, "a\\@R", "imap", "R"), "a\\@R@R");
        assert_eq!(principal(&c, "a\\\\@R", "imap", "R"), "a\\\\@R");
        // The login is never empty after stripping: `@R` alone stays.
        assert_eq!(principal(&c, "@R", "imap", "R"), "@R@R");
        // No realm in the request: the login's own realm, if any, stands.
        assert_eq!(
            principal(&c, "kuser@EXAMPLE.TEST", "imap", ""),
            "kuser@EXAMPLE.TEST"
        );
    }

    #[test]
    fn krb4_conversion_and_forced_instances() {
        let c = config("krb5_conv_krb4_instance: yes\nkrb5_imap_instance: mail\n");
        assert_eq!(principal(&c, "john.admin", "smtp", ""), "john/admin");
        assert_eq!(principal(&c, "a.b.c", "smtp", ""), "a/b.c");
        assert_eq!(principal(&c, "john", "imap", "R.TEST"), "john/mail@R.TEST");
        assert_eq!(principal(&c, "john.mail", "imap", ""), "john/mail");
        assert_eq!(
            principal(&c, "john.admin", "imap", ""),
            "principal name error"
        );
        // The realm suffix goes before the conversion sees its dots.
        assert_eq!(
            principal(&c, "john@R.TEST", "smtp", "R.TEST"),
            "john@R.TEST"
        );
        let plain = config("krb5_imap_instance: mail\n");
        assert_eq!(principal(&plain, "john/mail", "imap", ""), "john/mail");
        assert_eq!(
            principal(&plain, "john/mailx", "imap", ""),
            "principal name error"
        );
        assert_eq!(principal(&plain, "john.x", "imap", ""), "john.x/mail");
    }

    #[test]
    fn instance_keys() {
        assert_eq!(instance_service("krb5_imap_instance"), Some("imap"));
        assert_eq!(instance_service("krb5_conv_krb4_instance"), None);
        assert_eq!(instance_service("krb5__instance"), None);
        assert_eq!(instance_service("krb5_keytab"), None);
    }

    #[test]
    fn missing_and_malformed_files_fail_startup() {
        assert!(
            Config::load(Some("/nonexistent/saslauthd.conf"))
                .unwrap_err()
                .contains("cannot read")
        );
        let dir = std::env::temp_dir().join(format!("krb5-conf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("saslauthd.conf");
        std::fs::write(&path, "krb5_keytab : /x\n").unwrap();
        let error = Config::load(path.to_str()).unwrap_err();
        assert!(error.contains("line 1"), "{error}");
        std::fs::write(&path, "krb5_keytab: /etc/x.keytab\n").unwrap();
        let c = Config::load(path.to_str()).unwrap();
        assert_eq!(c.path.as_deref(), Some(path.as_path()));
        assert_eq!(c.keytab.as_deref(), Some("/etc/x.keytab"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
