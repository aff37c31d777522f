//! TLS client setup shared by the mechanisms that talk to a server (rimap, ldap): one
//! stack (native-tls, i.e. the system's OpenSSL), TLS 1.2 or later, certificates verified
//! unless a mechanism's configuration explicitly says otherwise, and trust anchors either
//! the system's store or only the PEM certificates an administrator names.
#![forbid(unsafe_code)]

use std::path::Path;

use native_tls::{Certificate, Protocol, TlsConnectorBuilder};

/// A connector builder with our floor: TLS 1.2.
pub fn connector_builder() -> TlsConnectorBuilder {
    let mut builder = native_tls::TlsConnector::builder();
    builder.min_protocol_version(Some(Protocol::Tlsv12));
    builder
}

/// Every PEM certificate in `path`; an error (naming the file) when it can't be read or
/// holds none.
pub fn read_pem_certificates(path: &Path) -> Result<Vec<Certificate>, String> {
    let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let certificates =
        Certificate::stack_from_pem(&pem).map_err(|e| format!("{}: {e}", path.display()))?;
    if certificates.is_empty() {
        return Err(format!(
            "{}: no PEM certificate in the file",
            path.display()
        ));
    }
    Ok(certificates)
}

/// Makes `certificates` the only trust anchors of `builder` (the system's are dropped).
pub fn trust_only(builder: &mut TlsConnectorBuilder, certificates: Vec<Certificate>) {
    builder.disable_built_in_roots(true);
    for certificate in certificates {
        builder.add_root_certificate(certificate);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_empty_files_are_named() {
        let missing = read_pem_certificates(Path::new("/nonexistent/ca.pem"))
            .err()
            .unwrap();
        assert!(missing.starts_with("/nonexistent/ca.pem: "), "{missing}");
        let dir = std::env::temp_dir().join(format!("mech-tls-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let error = read_pem_certificates(&empty).err().unwrap();
        assert!(error.contains("no PEM certificate"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
