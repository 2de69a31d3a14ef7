//! [`ClientCertificateCredential`]: an app registration's certificate.

use std::{
    fmt,
    path::Path,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use aws_lc_rs::{
    digest,
    rand::{SecureRandom, SystemRandom},
    signature::{KeyPair, RsaKeyPair, RSA_PKCS1_SHA256},
};
use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use rustls_pki_types::{
    pem::{self, PemObject, SectionKind},
    CertificateDer,
};
use secrecy::{zeroize::Zeroizing, ExposeSecret, SecretString};

use super::{endpoint::TokenEndpoint, AccessToken, TokenCredential};
use crate::Error;

/// How long a client assertion is valid.
const ASSERTION_LIFETIME_SECS: u64 = 10 * 60;
/// The `client_assertion_type` of a JWT client assertion (RFC 7523).
const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// Signs in as a Microsoft Entra ID app registration with a certificate
/// (OAuth 2.0 client credentials grant with a signed client assertion).
///
/// Each token request is a form-encoded `POST {authority}/{tenant}/oauth2/v2.0/token`
/// with `grant_type=client_credentials`, `client_id`, the client's `scope`,
/// `client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer`
/// and a `client_assertion`: a JWT signed with the certificate's RSA key
/// (RS256), whose header names the certificate by its SHA-1 thumbprint (`x5t`)
/// and whose claims are `aud` (the token endpoint), `iss` = `sub` (the client
/// id), a unique `jti`, `nbf`/`iat` (now) and `exp` (ten minutes later).
///
/// The certificate's public part must be uploaded to the app registration.
/// Only RSA keys are supported, in unencrypted PEM (`PRIVATE KEY` or
/// `RSA PRIVATE KEY`). `Debug` shows the thumbprint, never the key.
///
/// ```no_run
/// # fn run() -> Result<(), defender_endpoint::Error> {
/// use defender_endpoint::{Client, ClientCertificateCredential};
///
/// let credential = ClientCertificateCredential::from_pem(
///     "00000000-0000-0000-0000-000000000001", // tenant id
///     "00000000-0000-0000-0000-000000000002", // application (client) id
///     std::fs::read("app-cert.pem").unwrap_or_default(),
///     std::fs::read("app-key.pem").unwrap_or_default(),
/// )?;
/// let client = Client::builder().credential(credential).build()?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ClientCertificateCredential {
    endpoint: TokenEndpoint,
    key: Arc<RsaKeyPair>,
    /// SHA-1 of the certificate's DER.
    thumbprint: [u8; 20],
}

impl ClientCertificateCredential {
    /// A credential for the app `client_id` of the tenant `tenant_id`, signing
    /// its assertions with `private_key_pem`, the RSA key of the certificate
    /// in `certificate_pem`, at the commercial cloud's authority.
    ///
    /// `certificate_pem` may hold a chain, in any order: the app's certificate is
    /// the one whose public key is that of a private key in `private_key_pem`
    /// (which may hold other keys too). Both arguments may be the same PEM holding
    /// the certificate and the key. Lines may be indented, end in CRLF and start
    /// with a byte order mark; a certificate or key given twice counts once, and
    /// an encrypted key beside one that can be used is passed over. White
    /// space around either id is removed, as by
    /// [`ClientSecretCredential::new`](crate::ClientSecretCredential::new).
    ///
    /// Fails with [`Error::Credential`] for a malformed tenant id or a client id
    /// that is not a GUID, and when there is no certificate, no key,
    /// only encrypted or non-RSA keys, a key that does not belong to the
    /// certificate, or several certificates that each come with their key, or
    /// that share the one key (which is the app's is then not known).
    pub fn from_pem(
        tenant_id: impl Into<String>,
        client_id: impl Into<String>,
        certificate_pem: impl AsRef<[u8]>,
        private_key_pem: impl AsRef<[u8]>,
    ) -> Result<Self, Error> {
        // An encrypted PKCS#1 key, whose headers are not base64, is set aside
        // (not read as a malformed PEM), and reported if no other key can be used.
        let (key_pem, encrypted) = without_encrypted_pkcs1(&trim_lines(private_key_pem.as_ref()));
        let (certificate_pem, _) = without_encrypted_pkcs1(&trim_lines(certificate_pem.as_ref()));
        let mut certificates = certificates(&certificate_pem)?;
        // The same certificate twice (a leaf and a full chain concatenated) is one.
        let mut seen = std::collections::HashSet::new();
        certificates.retain(|c| seen.insert(c.as_ref().to_vec()));
        let mut keys = match rsa_keys(&key_pem) {
            Err(_) if encrypted => return Err(encrypted_key()),
            keys => keys?,
        };
        // So is the same key twice.
        let mut seen = std::collections::HashSet::new();
        keys.retain(|k| seen.insert(k.public_key().as_ref().to_vec()));
        // The app's certificate is the one whose key is given; a PEM with several
        // such pairs (a CA's certificate and key too, say) does not say which.
        let pairs: Vec<(usize, usize)> = certificates
            .iter()
            .enumerate()
            .flat_map(|(c, certificate)| {
                keys.iter()
                    .enumerate()
                    .filter(|(_, key)| contains(certificate.as_ref(), key.public_key().as_ref()))
                    .map(move |(k, _)| (c, k))
            })
            .collect();
        let (certificate, key) = match pairs[..] {
            [(c, k)] => (&certificates[c], keys.swap_remove(k)),
            // The certificate's key may be the encrypted one.
            [] if encrypted => return Err(encrypted_key()),
            [] => {
                return Err(Error::credential(
                    "the private key does not belong to the certificate",
                ))
            }
            [(_, k), ..] if pairs.iter().all(|&(_, other)| other == k) => {
                return Err(Error::credential(format!(
                    "{} certificates belong to the private key: give only the one \
                     registered with the app",
                    pairs.len()
                )))
            }
            _ => {
                return Err(Error::credential(format!(
                    "{} certificates come with their private keys: give only the app's",
                    pairs.len()
                )))
            }
        };
        let mut thumbprint = [0u8; 20];
        thumbprint.copy_from_slice(
            digest::digest(&digest::SHA1_FOR_LEGACY_USE_ONLY, certificate.as_ref()).as_ref(),
        );
        let endpoint = TokenEndpoint::new(tenant_id.into(), client_id.into());
        // The ids too, while the caller is there to hear of them.
        endpoint.url()?;
        Ok(Self {
            endpoint,
            key: Arc::new(key),
            thumbprint,
        })
    }

    /// [`from_pem`](Self::from_pem) with one PEM that holds both the certificate
    /// and its private key (the format of `AZURE_CLIENT_CERTIFICATE_PATH`).
    pub fn from_pem_bundle(
        tenant_id: impl Into<String>,
        client_id: impl Into<String>,
        pem: impl AsRef<[u8]>,
    ) -> Result<Self, Error> {
        let pem = pem.as_ref();
        Self::from_pem(tenant_id, client_id, pem, pem)
    }

    /// [`from_pem_bundle`](Self::from_pem_bundle) with the PEM read from `path`,
    /// which must be a regular file of at most 1 MiB (not a pipe or a device,
    /// which may never end).
    pub fn from_pem_file(
        tenant_id: impl Into<String>,
        client_id: impl Into<String>,
        path: impl AsRef<Path>,
    ) -> Result<Self, Error> {
        let path = path.as_ref();
        let cannot = |why: &dyn std::fmt::Display| {
            Error::credential(format!(
                "cannot read the certificate file {}: {why}",
                path.display()
            ))
        };
        // A file, and of a certificate's size: not a pipe (which opening would
        // wait on) or a device that may never end.
        if !std::fs::metadata(path).map_err(|e| cannot(&e))?.is_file() {
            return Err(cannot(&"it is not a regular file"));
        }
        let file = std::fs::File::open(path).map_err(|e| cannot(&e))?;
        let mut pem = Zeroizing::new(Vec::new());
        std::io::Read::read_to_end(&mut std::io::Read::take(file, MAX_PEM_FILE + 1), &mut pem)
            .map_err(|e| cannot(&e))?;
        if pem.len() as u64 > MAX_PEM_FILE {
            return Err(cannot(&format_args!(
                "it is larger than {} KiB, which no certificate and key are",
                MAX_PEM_FILE / 1024
            )));
        }
        Self::from_pem_bundle(tenant_id, client_id, &*pem).map_err(|e| match e {
            Error::Credential { message, .. } => {
                Error::credential(format!("{}: {message}", path.display()))
            }
            other => other,
        })
    }

    /// Signs in at another authority, such as a US Government cloud's
    /// ([`Cloud::authority_host`](crate::Cloud::authority_host)).
    ///
    /// `https://` is required, except for loopback hosts; a bare host name
    /// gets `https://`. Fails with [`Error::Config`] otherwise, and for a URL
    /// with a query, a fragment, user info or a `.` or `..` path segment. The
    /// host alone:
    /// one with the tenant in its path, or any path on Microsoft's sign-in hosts,
    /// is refused by [`ClientBuilder::build`](crate::ClientBuilder::build) (and,
    /// for the credential used on its own, at its first token request) with
    /// [`Error::Credential`].
    pub fn authority_host(mut self, url: impl AsRef<str>) -> Result<Self, Error> {
        self.endpoint.set_authority(url.as_ref())?;
        Ok(self)
    }

    /// Sends token requests through a `reqwest::Client` of your own (a proxy,
    /// custom TLS roots, …) instead of the credential's (30 s timeout, no redirects).
    /// Whatever its redirect policy, a redirect never carries the form: a 307 or 308
    /// is not followed, and the answer a followed 301, 302 or 303 leads to is refused
    /// ([`Error::Credential`](crate::Error::Credential)). For a plain-http (loopback)
    /// authority, build it with `reqwest::ClientBuilder::no_proxy()`: a token request
    /// through a client that may use a proxy fails with
    /// [`Error::Config`](crate::Error::Config), as the proxy would see the form in clear.
    #[must_use]
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.endpoint.set_http_client(client);
        self
    }

    /// The certificate's SHA-1 thumbprint in upper-case hex, as the Azure
    /// portal lists it under the app registration's certificates.
    pub fn thumbprint(&self) -> String {
        self.thumbprint.iter().map(|b| format!("{b:02X}")).collect()
    }

    /// The signed client assertion for the token endpoint `audience`.
    fn assertion(&self, audience: &str) -> Result<SecretString, Error> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|_| Error::credential("the system clock is before 1970"))?
            .as_secs();
        let header = serde_json::json!({
            "alg": "RS256",
            "typ": "JWT",
            "x5t": URL_SAFE_NO_PAD.encode(self.thumbprint),
        });
        let claims = serde_json::json!({
            "aud": audience,
            "iss": self.endpoint.client_id(),
            "sub": self.endpoint.client_id(),
            "jti": jti()?,
            "nbf": now,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME_SECS,
        });
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut signature = vec![0u8; self.key.public_modulus_len()];
        self.key
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                signing_input.as_bytes(),
                &mut signature,
            )
            .map_err(|_| Error::credential("could not sign the client assertion"))?;
        Ok(SecretString::from(format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature)
        )))
    }
}

impl fmt::Debug for ClientCertificateCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCertificateCredential")
            .field("endpoint", &self.endpoint)
            .field("thumbprint", &self.thumbprint())
            .field("private_key", &"***")
            .finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl TokenCredential for ClientCertificateCredential {
    async fn get_token(&self, scopes: &[&str]) -> Result<AccessToken, Error> {
        let url = self.endpoint.url()?;
        let scope = super::join_scopes(scopes)?;
        let assertion = self.assertion(&url)?;
        let assertion = assertion.expose_secret();
        self.endpoint
            .request(
                &url,
                &[
                    ("grant_type", "client_credentials"),
                    ("client_id", self.endpoint.client_id()),
                    ("scope", &scope),
                    ("client_assertion_type", JWT_BEARER),
                    ("client_assertion", assertion),
                ],
                &[assertion],
            )
            .await
    }

    fn signs_in_at(&self) -> Option<&str> {
        Some(self.endpoint.authority())
    }

    fn problem(&self) -> Option<Error> {
        self.endpoint.url().err()
    }
}

/// A random UUID (version 4), the assertion's `jti`.
fn jti() -> Result<String, Error> {
    let mut bytes = [0u8; 16];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Error::credential("the system's random number generator failed"))?;
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    ))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Words for a PEM syntax error that quote nothing from the input.
fn pem_problem(e: &pem::Error) -> &'static str {
    match e {
        pem::Error::MissingSectionEnd { .. } => "a section has no END line",
        pem::Error::IllegalSectionStart { .. } => "a BEGIN line is malformed",
        pem::Error::Base64Decode(_) => "a section's base64 is invalid",
        pem::Error::SectionTooLarge => "a section is too large",
        _ => "it could not be read",
    }
}

/// The largest certificate file read: a certificate, its chain and its key take
/// a few KiB.
const MAX_PEM_FILE: u64 = 1024 * 1024;

/// `pem` with the white space around each line removed, so that an indented
/// block (pasted from a YAML file, say) reads like any other, and a byte order
/// mark (which Notepad writes, and `cat` keeps between joined files) removed
/// from the start of any line.
fn trim_lines(pem: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(pem.len()));
    for line in pem.split(|&b| b == b'\n') {
        let line = line.trim_ascii();
        out.extend_from_slice(
            line.strip_prefix(b"\xEF\xBB\xBF")
                .unwrap_or(line)
                .trim_ascii(),
        );
        out.push(b'\n');
    }
    out
}

/// `pem` (with its lines trimmed) without its encrypted PKCS#1 keys, and whether
/// it had any.
fn without_encrypted_pkcs1(pem: &[u8]) -> (Zeroizing<Vec<u8>>, bool) {
    const BEGIN: &[u8] = b"-----BEGIN RSA PRIVATE KEY-----";
    const END: &[u8] = b"-----END RSA PRIVATE KEY-----";
    let mut out = Zeroizing::new(Vec::with_capacity(pem.len()));
    let mut section: Option<Zeroizing<Vec<u8>>> = None;
    let mut found = false;
    for line in pem.split_inclusive(|&b| b == b'\n') {
        let text = line.trim_ascii();
        match &mut section {
            None if text == BEGIN => section = Some(Zeroizing::new(line.to_vec())),
            None => out.extend_from_slice(line),
            Some(held) => {
                held.extend_from_slice(line);
                if text == END {
                    if contains(held, ENCRYPTED_PKCS1) {
                        found = true;
                    } else {
                        out.extend_from_slice(held);
                    }
                    section = None;
                }
            }
        }
    }
    // A section without its end is left for the PEM reader to report.
    if let Some(held) = section {
        out.extend_from_slice(&held);
    }
    (out, found)
}

/// Every certificate of a PEM (a chain may hold several), at least one.
fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certificates = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            Error::credential(format!(
                "the certificate PEM is malformed: {}",
                pem_problem(&e)
            ))
        })?;
    if certificates.is_empty() {
        return Err(Error::credential(
            "no certificate found: expected a `-----BEGIN CERTIFICATE-----` section",
        ));
    }
    Ok(certificates)
}

/// The header of an encrypted PKCS#1 key, whose section is then not base64 alone.
const ENCRYPTED_PKCS1: &[u8] = b"Proc-Type: 4,ENCRYPTED";

fn encrypted_key() -> Error {
    Error::credential(
        "the private key is encrypted: give it unencrypted (PKCS#8 `PRIVATE KEY` or PKCS#1 `RSA PRIVATE KEY`)",
    )
}

/// The RSA private keys of a PEM, at least one, unencrypted. A key of another
/// kind, or one that cannot be read, is an error only when there is no other.
/// (Encrypted PKCS#1 keys are set aside before, by [`without_encrypted_pkcs1`].)
fn rsa_keys(pem: &[u8]) -> Result<Vec<RsaKeyPair>, Error> {
    let rejected = |e: aws_lc_rs::error::KeyRejected| {
        Error::credential(format!("the private key was rejected: {e}"))
    };
    let mut keys = Vec::new();
    let mut problem = None;
    for section in <(SectionKind, Vec<u8>)>::pem_slice_iter(pem) {
        let (kind, der) = match section {
            Ok((kind, der)) => (kind, Zeroizing::new(der)),
            Err(e) => {
                return Err(Error::credential(format!(
                    "the private key PEM is malformed: {}",
                    pem_problem(&e)
                )))
            }
        };
        let key = match kind {
            SectionKind::PrivateKey => RsaKeyPair::from_pkcs8(&der).map_err(|e| {
                if e.description_() == "WrongAlgorithm" {
                    Error::credential(
                        "the private key is not an RSA key: only RSA keys are supported",
                    )
                } else {
                    rejected(e)
                }
            }),
            SectionKind::RsaPrivateKey => RsaKeyPair::from_der(&der).map_err(rejected),
            SectionKind::EcPrivateKey => Err(Error::credential(
                "the private key is an EC key: only RSA keys are supported",
            )),
            _ => continue,
        };
        match key {
            Ok(key) => keys.push(key),
            Err(e) => {
                problem.get_or_insert(e);
            }
        }
    }
    if !keys.is_empty() {
        return Ok(keys);
    }
    Err(problem.unwrap_or_else(|| {
        if contains(pem, b"ENCRYPTED PRIVATE KEY") {
            encrypted_key()
        } else {
            Error::credential(
                "no private key found: expected a `-----BEGIN PRIVATE KEY-----` or `-----BEGIN RSA PRIVATE KEY-----` section",
            )
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jti_is_a_v4_uuid_and_unique() {
        let a = jti().unwrap();
        let b = jti().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"), "{a}");
    }

    #[test]
    fn pem_errors_are_clear() {
        for (pem, words) in [
            (&b""[..], "no certificate found"),
            (b"garbage", "no certificate found"),
            (
                b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
                "malformed",
            ),
            (b"-----BEGIN CERTIFICATE-----\nAAAA\n", "malformed"),
        ] {
            let err = ClientCertificateCredential::from_pem("t", "c", pem, pem).unwrap_err();
            assert!(err.to_string().contains(words), "{err}");
        }
        let cert = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        for (key, words) in [
            (&b""[..], "no private key found"),
            (
                b"-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
                "encrypted",
            ),
            (
                b"-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-128-CBC,00112233445566778899AABBCCDDEEFF\n\nAAAA\n-----END RSA PRIVATE KEY-----\n",
                "encrypted",
            ),
            (
                b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                "rejected",
            ),
            (
                b"-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n",
                "only RSA",
            ),
        ] {
            let err = ClientCertificateCredential::from_pem("t", "c", cert, key).unwrap_err();
            assert!(
                matches!(err, Error::Credential { .. }) && err.to_string().contains(words),
                "{err}"
            );
        }
    }
}
