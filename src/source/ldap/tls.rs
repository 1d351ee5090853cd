//! TLS for the LDAP source: rustls with the system roots plus `ca_file`, or
//! exactly one certificate named by its SHA-256 (`tls.pin_sha256`).
//! Verification is never off: a pinned certificate is accepted without a
//! CA or a name check (Samba's own certificate, and those of older AD CS
//! templates, name the host in the CN only, which rustls does not read),
//! but the handshake's signature is still checked with its key, and any
//! other certificate fails. Either way the verifier remembers the
//! presented certificate's fingerprint, so a refusal can print it for the
//! operator to compare out of band.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};

use super::LdapError;
use crate::config::LdapSettings;

/// SHA-256 of `data` (ring's, through rustls).
pub fn sha256(data: &[u8]) -> Option<[u8; 32]> {
    use rustls::crypto::hash::HashAlgorithm;
    let suite = rustls::crypto::ring::cipher_suite::TLS13_AES_128_GCM_SHA256.tls13()?;
    let hash = suite.common.hash_provider;
    if hash.algorithm() != HashAlgorithm::SHA256 {
        return None;
    }
    hash.hash(data).as_ref().try_into().ok()
}

/// `AB:CD:...`, as `openssl x509 -fingerprint -sha256` prints it.
pub fn colon_hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 3);
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        let _ = write!(out, "{b:02X}");
    }
    out
}

/// What the verifier saw of the last certificate it was shown.
#[derive(Clone, Debug)]
pub(super) struct Presented {
    /// SHA-256 of the end-entity certificate's DER (None: not computable,
    /// which is refused).
    pub fingerprint: Option<[u8; 32]>,
    /// Why it was refused, if it was.
    pub refused: Option<String>,
}

#[derive(Debug)]
enum Trust {
    /// The system roots and `ca_file`, with the host name checked.
    Roots(Arc<WebPkiServerVerifier>),
    /// Exactly this certificate.
    Pin([u8; 32]),
}

/// The one certificate verifier of the LDAP source.
#[derive(Debug)]
pub(super) struct Verifier {
    trust: Trust,
    provider: Arc<CryptoProvider>,
    presented: Mutex<Option<Presented>>,
}

impl Verifier {
    /// The certificate of the last handshake, and why it was refused.
    pub fn presented(&self) -> Option<Presented> {
        self.presented.lock().ok().and_then(|p| p.clone())
    }

    /// Is a certificate pinned (rather than trusted through a CA)?
    pub fn pinned(&self) -> Option<[u8; 32]> {
        match self.trust {
            Trust::Pin(pin) => Some(pin),
            Trust::Roots(_) => None,
        }
    }

    fn remember(&self, fingerprint: Option<[u8; 32]>, refused: Option<String>) {
        if let Ok(mut p) = self.presented.lock() {
            *p = Some(Presented {
                fingerprint,
                refused,
            });
        }
    }
}

/// A certificate error in words, with the rustls name for searching.
fn describe(e: &rustls::Error) -> String {
    match e {
        rustls::Error::InvalidCertificate(c) => match c {
            CertificateError::UnknownIssuer => {
                "it is not issued by a trusted CA (UnknownIssuer)".to_owned()
            }
            CertificateError::NotValidForName => {
                "it does not name the host in the URL (NotValidForName)".to_owned()
            }
            CertificateError::NotValidForNameContext { .. } => {
                format!("{c} (NotValidForName)")
            }
            other => other.to_string(),
        },
        other => other.to_string(),
    }
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let fingerprint = sha256(end_entity.as_ref());
        let result = match &self.trust {
            Trust::Roots(webpki) => webpki.verify_server_cert(
                end_entity,
                intermediates,
                server_name,
                ocsp_response,
                now,
            ),
            Trust::Pin(pin) if fingerprint.as_ref() == Some(pin) => {
                Ok(ServerCertVerified::assertion())
            }
            Trust::Pin(_) => Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            )),
        };
        let refused = match (&result, &self.trust) {
            (Ok(_), _) => None,
            (Err(_), Trust::Pin(pin)) => Some(format!(
                "it is not the certificate source.ldap.tls.pin_sha256 names ({})",
                colon_hex(pin)
            )),
            (Err(e), Trust::Roots(_)) => Some(describe(e)),
        };
        self.remember(fingerprint, refused);
        result
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The rustls client configuration of a connection, and its verifier (to
/// ask what certificate the server presented when the handshake fails).
pub(super) fn tls_config(
    settings: &LdapSettings,
) -> Result<(Arc<rustls::ClientConfig>, Arc<Verifier>), LdapError> {
    use rustls::pki_types::pem::PemObject;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let connect_err = |detail: String| LdapError::Connect {
        url: settings.url.to_string(),
        detail,
    };
    let trust = match settings.pin_sha256 {
        Some(pin) => Trust::Pin(pin),
        None => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
            if let Some(path) = &settings.ca_file {
                let ca_err = |detail: String| LdapError::CaFile {
                    path: path.display().to_string(),
                    detail,
                };
                let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                    .map_err(|e| ca_err(e.to_string()))?
                    .collect::<Result<_, _>>()
                    .map_err(|e| ca_err(e.to_string()))?;
                if certs.is_empty() {
                    return Err(ca_err("no PEM certificate in it".to_owned()));
                }
                for cert in certs {
                    roots.add(cert).map_err(|e| ca_err(e.to_string()))?;
                }
            }
            let webpki =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| connect_err(format!("no certificate can be trusted: {e}")))?;
            Trust::Roots(webpki)
        }
    };
    let verifier = Arc::new(Verifier {
        trust,
        provider: provider.clone(),
        presented: Mutex::new(None),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| connect_err(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    Ok((Arc::new(config), verifier))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_sha256_in_openssl_notation() {
        // SHA-256 of "abc" (FIPS 180-2, appendix B.1).
        let abc = sha256(b"abc").unwrap();
        assert_eq!(
            colon_hex(&abc),
            "BA:78:16:BF:8F:01:CF:EA:41:41:40:DE:5D:AE:22:23:B0:03:61:A3:96:17:7A:9C:B4:10:FF:61:F2:00:15:AD"
        );
    }
}
