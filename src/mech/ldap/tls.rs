//! TLS for `ldaps://` and `ldap_start_tls`, from the `ldap_tls_*` keys, on the same stack as
//! rimap ([`crate::mech::tls`]: native-tls over the system's OpenSSL, TLS 1.2 or later).
//!
//! | key | here |
//! |---|---|
//! | `ldap_tls_check_peer` | on unless explicitly off: the chain and the host name (or IP address) are verified |
//! | `ldap_tls_cacert_file` | its PEM certificates are trust anchors, instead of the system's store |
//! | `ldap_tls_cacert_dir` | every PEM certificate of every file in it, likewise (with the file's) |
//! | `ldap_tls_cert`, `ldap_tls_key` | the client certificate (PEM; any private key format OpenSSL reads) |
//! | `ldap_tls_ciphers` | ignored with a note (a GnuTLS priority string in Debian's libldap; native-tls has no cipher setting) |
//!
//! Unlike libldap, `localhost` is checked as `localhost` (libldap substitutes the machine's
//! host name), and no `/etc/ldap/ldap.conf`, `~/.ldaprc` or `LDAPTLS_*` variable is read.
#![forbid(unsafe_code)]

use std::net::IpAddr;
use std::path::Path;

use native_tls::{Certificate, Identity, TlsConnector};

use super::config::TlsSettings;
use crate::mech::tls;

/// The connectors a configuration needs, built once per (re)load.
pub struct TlsSetup {
    /// Verifies the chain and the name in the URL.
    connector: TlsConnector,
    /// Verifies the chain only: for IPv6 addresses, whose check is ours ([`names_ip`]).
    chain_only: TlsConnector,
    check_peer: bool,
    /// Where the trust anchors come from, for log lines.
    pub anchors: String,
}

impl TlsSetup {
    /// Reads the files the settings name and builds the connectors; the error names the
    /// key and the file.
    pub fn new(settings: &TlsSettings) -> Result<TlsSetup, String> {
        let mut anchors: Vec<Certificate> = Vec::new();
        let mut sources = Vec::new();
        if let Some(path) = &settings.cacert_file {
            anchors.extend(
                tls::read_pem_certificates(path)
                    .map_err(|e| format!("ldap_tls_cacert_file: {e}"))?,
            );
            sources.push(format!("the CA file {}", path.display()));
        }
        if let Some(dir) = &settings.cacert_dir {
            anchors.extend(certificates_in(dir).map_err(|e| format!("ldap_tls_cacert_dir: {e}"))?);
            sources.push(format!("the CA directory {}", dir.display()));
        }
        let identity = match &settings.client_identity {
            Some((cert, key)) => Some(client_identity(cert, key)?),
            None => None,
        };
        let anchors_text = if sources.is_empty() {
            "the system's trust store".to_string()
        } else {
            sources.join(" and ")
        };
        let build = |skip_names: bool| -> Result<TlsConnector, String> {
            let mut builder = tls::connector_builder();
            if !anchors.is_empty() {
                tls::trust_only(&mut builder, anchors.clone());
            }
            if let Some(identity) = &identity {
                builder.identity(identity.clone());
            }
            if !settings.check_peer {
                builder.danger_accept_invalid_certs(true);
                builder.danger_accept_invalid_hostnames(true);
            }
            if skip_names {
                builder.danger_accept_invalid_hostnames(true);
                builder.use_sni(false);
            }
            builder
                .build()
                .map_err(|e| format!("cannot set up TLS: {e}"))
        };
        Ok(TlsSetup {
            connector: build(false)?,
            chain_only: build(true)?,
            check_peer: settings.check_peer,
            anchors: anchors_text,
        })
    }

    /// The connector for a server; `own_name_check`: the caller checks the IP address.
    pub fn connector(&self, own_name_check: bool) -> TlsConnector {
        if own_name_check {
            self.chain_only.clone()
        } else {
            self.connector.clone()
        }
    }

    /// Whether certificates are verified.
    pub fn check_peer(&self) -> bool {
        self.check_peer
    }
}

/// Every PEM certificate in the regular files of `dir` (OpenSSL's hashed links included:
/// duplicates do no harm).
fn certificates_in(dir: &Path) -> Result<Vec<Certificate>, String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut found = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if !path.is_file() {
            continue;
        }
        if let Ok(certificates) = tls::read_pem_certificates(&path) {
            found.extend(certificates);
        }
    }
    if found.is_empty() {
        return Err(format!("{}: no PEM certificate in any file", dir.display()));
    }
    Ok(found)
}

/// The client certificate and key as native-tls wants them (the key in PKCS#8).
fn client_identity(cert: &Path, key: &Path) -> Result<Identity, String> {
    let cert_pem =
        std::fs::read(cert).map_err(|e| format!("ldap_tls_cert: {}: {e}", cert.display()))?;
    let key_pem = zeroize::Zeroizing::new(
        std::fs::read(key).map_err(|e| format!("ldap_tls_key: {}: {e}", key.display()))?,
    );
    let private = openssl::pkey::PKey::private_key_from_pem(&key_pem).map_err(|e| {
        format!(
            "ldap_tls_key: {}: not a PEM private key: {e}",
            key.display()
        )
    })?;
    let pkcs8 = zeroize::Zeroizing::new(
        private
            .private_key_to_pem_pkcs8()
            .map_err(|e| format!("ldap_tls_key: {}: {e}", key.display()))?,
    );
    Identity::from_pkcs8(&cert_pem, &pkcs8)
        .map_err(|e| format!("ldap_tls_cert: {}: {e}", cert.display()))
}

/// Whether the DER certificate names `ip` in an IP-address subjectAltName.
pub fn names_ip(der: &[u8], ip: IpAddr) -> bool {
    let Ok(certificate) = openssl::x509::X509::from_der(der) else {
        return false;
    };
    let Some(names) = certificate.subject_alt_names() else {
        return false;
    };
    let want: Vec<u8> = match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    };
    names
        .iter()
        .any(|name| name.ipaddress() == Some(want.as_slice()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::asn1::Asn1Time;
    use openssl::ec::{EcGroup, EcKey};
    use openssl::hash::MessageDigest;
    use openssl::nid::Nid;
    use openssl::pkey::PKey;
    use openssl::x509::extension::SubjectAlternativeName;
    use openssl::x509::{X509, X509NameBuilder};

    fn certificate(sans: &[&str]) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let key = PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap();
        let mut name = X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", "test").unwrap();
        let name = name.build();
        let mut builder = X509::builder().unwrap();
        builder.set_version(2).unwrap();
        builder.set_subject_name(&name).unwrap();
        builder.set_issuer_name(&name).unwrap();
        builder.set_pubkey(&key).unwrap();
        builder
            .set_not_before(&Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        builder
            .set_not_after(&Asn1Time::days_from_now(1).unwrap())
            .unwrap();
        let mut san = SubjectAlternativeName::new();
        for entry in sans {
            if entry.parse::<IpAddr>().is_ok() {
                san.ip(entry);
            } else {
                san.dns(entry);
            }
        }
        let extension = san.build(&builder.x509v3_context(None, None)).unwrap();
        builder.append_extension(extension).unwrap();
        builder.sign(&key, MessageDigest::sha256()).unwrap();
        let cert = builder.build();
        (
            cert.to_der().unwrap(),
            cert.to_pem().unwrap(),
            key.ec_key().unwrap().private_key_to_pem().unwrap(),
        )
    }

    #[test]
    fn ip_sans() {
        let (der, _, _) = certificate(&["localhost", "127.0.0.1", "::1"]);
        assert!(names_ip(&der, "::1".parse().unwrap()));
        assert!(names_ip(&der, "127.0.0.1".parse().unwrap()));
        assert!(!names_ip(&der, "::2".parse().unwrap()));
        let (der, _, _) = certificate(&["localhost", "127.0.0.1"]);
        assert!(!names_ip(&der, "::1".parse().unwrap()));
        assert!(!names_ip(b"not der", "::1".parse().unwrap()));
    }

    #[test]
    fn files_and_directories() {
        let dir = std::env::temp_dir().join(format!("ldap-tls-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("cas")).unwrap();
        let (_, pem, key) = certificate(&["localhost"]);
        std::fs::write(dir.join("cas/ca.pem"), &pem).unwrap();
        std::fs::write(dir.join("cas/README"), "not a certificate").unwrap();
        std::fs::write(dir.join("cert.pem"), &pem).unwrap();
        // A traditional ("BEGIN EC PRIVATE KEY") key: converted to PKCS#8.
        std::fs::write(dir.join("key.pem"), &key).unwrap();
        let settings = TlsSettings {
            check_peer: true,
            cacert_file: Some(dir.join("cert.pem")),
            cacert_dir: Some(dir.join("cas")),
            client_identity: Some((dir.join("cert.pem"), dir.join("key.pem"))),
        };
        let setup = TlsSetup::new(&settings).unwrap();
        assert!(setup.anchors.contains("CA file") && setup.anchors.contains("CA directory"));
        assert!(setup.check_peer());

        std::fs::write(dir.join("cas/ca.pem"), "nothing").unwrap();
        let error = TlsSetup::new(&settings).err().unwrap();
        assert!(error.starts_with("ldap_tls_cacert_dir: "), "{error}");
        let bad_key = TlsSettings {
            cacert_dir: None,
            client_identity: Some((dir.join("cert.pem"), dir.join("cert.pem"))),
            ..settings
        };
        let error = TlsSetup::new(&bad_key).err().unwrap();
        assert!(error.starts_with("ldap_tls_key: "), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
