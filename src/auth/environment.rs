//! [`EnvironmentCredential`]: an app credential configured by the Azure SDK's variables.

use std::fmt;

use secrecy::SecretString;

use super::{AccessToken, ClientCertificateCredential, ClientSecretCredential, TokenCredential};
use crate::Error;

const TENANT_ID: &str = "AZURE_TENANT_ID";
const CLIENT_ID: &str = "AZURE_CLIENT_ID";
const CLIENT_SECRET: &str = "AZURE_CLIENT_SECRET";
const CERTIFICATE_PATH: &str = "AZURE_CLIENT_CERTIFICATE_PATH";
const CERTIFICATE_PASSWORD: &str = "AZURE_CLIENT_CERTIFICATE_PASSWORD";
const AUTHORITY_HOST: &str = "AZURE_AUTHORITY_HOST";

/// An app credential configured by the environment variables the Azure SDKs read:
///
/// | variable | meaning |
/// |---|---|
/// | `AZURE_TENANT_ID` | the tenant (directory) id, required |
/// | `AZURE_CLIENT_ID` | the application (client) id, required |
/// | `AZURE_CLIENT_SECRET` | a client secret: a [`ClientSecretCredential`] |
/// | `AZURE_CLIENT_CERTIFICATE_PATH` | else, a PEM file holding the certificate and its unencrypted RSA key: a [`ClientCertificateCredential`] |
/// | `AZURE_AUTHORITY_HOST` | optional sign-in authority, like `https://login.microsoftonline.us` |
///
/// Empty variables, and a secret of white space only, count as unset. White
/// space around the ids, the certificate path and the authority is removed; the
/// secret is otherwise taken as it is. The client id must be a GUID, and
/// neither id is shown in an error (either may be a secret set by mistake in
/// its place). When both a
/// secret and a certificate path are set, the secret is used, as in the Azure
/// SDKs.
///
/// ```no_run
/// # fn run() -> Result<(), defender_endpoint::Error> {
/// use defender_endpoint::{Client, EnvironmentCredential};
///
/// let client = Client::builder()
///     .credential(EnvironmentCredential::from_env()?)
///     .build()?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct EnvironmentCredential {
    inner: Inner,
}

#[derive(Clone)]
enum Inner {
    Secret(ClientSecretCredential),
    Certificate(ClientCertificateCredential),
}

impl EnvironmentCredential {
    /// Reads the process environment.
    ///
    /// Fails with an [`Error::Credential`] naming the missing variables, or
    /// one it uses set to a value that is not UTF-8 (the certificate path is
    /// not used beside a secret), or
    /// a malformed `AZURE_TENANT_ID`, or an `AZURE_CLIENT_ID` that is not a
    /// GUID, or telling why the certificate file could
    /// not be used, and with
    /// [`Error::Config`] for an unusable `AZURE_AUTHORITY_HOST` (not UTF-8 included).
    pub fn from_env() -> Result<Self, Error> {
        // A variable that is used, set to a value that is not UTF-8, is not
        // taken as unset (the certificate path is used only without a secret).
        let not_utf8 =
            |name: &str| matches!(std::env::var(name), Err(std::env::VarError::NotUnicode(_)));
        let secret_set = match std::env::var(CLIENT_SECRET) {
            Ok(secret) => !secret.trim().is_empty(),
            Err(std::env::VarError::NotPresent) => false,
            Err(std::env::VarError::NotUnicode(_)) => true,
        };
        let mut used = [TENANT_ID, CLIENT_ID, CLIENT_SECRET, AUTHORITY_HOST]
            .into_iter()
            .chain((!secret_set).then_some(CERTIFICATE_PATH));
        if let Some(name) = used.find(|&name| not_utf8(name)) {
            let message = format!("EnvironmentCredential: {name} is set, but not to valid UTF-8");
            return Err(if name == AUTHORITY_HOST {
                Error::Config(message)
            } else {
                Error::credential(message)
            });
        }
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Like [`from_env`](Self::from_env), with variables looked up by `lookup`
    /// (a configuration file, a secret store, a test) instead of the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let get = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let tenant_id = get(TENANT_ID);
        let client_id = get(CLIENT_ID);
        // A secret is taken as it is; an empty one, or one of white space only
        // (which no secret is), counts as unset.
        let secret = lookup(CLIENT_SECRET)
            .filter(|v| !v.trim().is_empty())
            .map(SecretString::from);
        let certificate_path = get(CERTIFICATE_PATH);

        let mut missing = Vec::new();
        if tenant_id.is_none() {
            missing.push(TENANT_ID.to_owned());
        }
        if client_id.is_none() {
            missing.push(CLIENT_ID.to_owned());
        }
        if secret.is_none() && certificate_path.is_none() {
            missing.push(format!("{CLIENT_SECRET} or {CERTIFICATE_PATH}"));
        }
        let (Some(tenant_id), Some(client_id), []) = (tenant_id, client_id, &missing[..]) else {
            return Err(Error::credential(format!(
                "EnvironmentCredential: missing environment variable{} {}",
                if missing.len() > 1 { "s" } else { "" },
                missing.join(", ")
            )));
        };
        // Checked here, not at the first token request: a configuration that cannot
        // work is reported when it is read.
        super::endpoint::check_tenant(&tenant_id).map_err(from_variable(TENANT_ID))?;
        if !super::endpoint::is_guid(&client_id) {
            return Err(Error::credential(format!(
                "{CLIENT_ID}: the client id ({} characters) is not a GUID: it is the app \
                 registration's Application (client) ID",
                client_id.chars().count()
            )));
        }
        let authority = get(AUTHORITY_HOST);
        let with_authority = |result: Result<Inner, Error>| -> Result<Inner, Error> {
            let Some(url) = &authority else {
                return result;
            };
            let named = from_variable(AUTHORITY_HOST);
            Ok(match result? {
                Inner::Secret(c) => Inner::Secret(c.authority_host(url).map_err(named)?),
                Inner::Certificate(c) => Inner::Certificate(c.authority_host(url).map_err(named)?),
            })
        };

        let inner = if let Some(secret) = secret {
            with_authority(Ok(Inner::Secret(ClientSecretCredential::new(
                tenant_id, client_id, secret,
            ))))?
        } else {
            let path = certificate_path.unwrap_or_default();
            if get(CERTIFICATE_PASSWORD).is_some() {
                return Err(Error::credential(format!(
                    "{CERTIFICATE_PASSWORD} is set, but password-protected certificates are not \
                     supported: point {CERTIFICATE_PATH} to an unencrypted PEM file"
                )));
            }
            let certificate =
                ClientCertificateCredential::from_pem_file(tenant_id, client_id, &path)
                    .map_err(from_variable(CERTIFICATE_PATH))?;
            with_authority(Ok(Inner::Certificate(certificate)))?
        };
        let credential = Self { inner };
        // The ids are checked above, and a blank secret counts as none: what is
        // left is an authority that holds a path.
        if let Some(problem) = credential.problem() {
            return Err(from_variable(AUTHORITY_HOST)(problem));
        }
        Ok(credential)
    }
}

/// An error about the value of the environment variable `variable`, its
/// message starting with the variable's name.
fn from_variable(variable: &'static str) -> impl Fn(Error) -> Error {
    move |error| match error {
        Error::Credential { message, .. } => Error::credential(format!("{variable}: {message}")),
        Error::Config(message) => Error::Config(format!("{variable}: {message}")),
        other => other,
    }
}

impl fmt::Debug for EnvironmentCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("EnvironmentCredential");
        match &self.inner {
            Inner::Secret(c) => s.field("credential", c),
            Inner::Certificate(c) => s.field("credential", c),
        };
        s.finish_non_exhaustive()
    }
}

#[async_trait::async_trait]
impl TokenCredential for EnvironmentCredential {
    async fn get_token(&self, scopes: &[&str]) -> Result<AccessToken, Error> {
        match &self.inner {
            Inner::Secret(c) => c.get_token(scopes).await,
            Inner::Certificate(c) => c.get_token(scopes).await,
        }
    }

    fn signs_in_at(&self) -> Option<&str> {
        match &self.inner {
            Inner::Secret(c) => c.signs_in_at(),
            Inner::Certificate(c) => c.signs_in_at(),
        }
    }

    fn problem(&self) -> Option<Error> {
        match &self.inner {
            Inner::Secret(c) => c.problem(),
            Inner::Certificate(c) => c.problem(),
        }
    }
}
