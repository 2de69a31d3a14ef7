//! [`Cloud`]: the API base, sign-in authority and token scope of each Microsoft cloud.

use crate::hooks::redact_user_info;
use std::{fmt, str::FromStr};

/// The commercial cloud's token scope (also that of every geo host).
const COMMERCIAL_SCOPE: &str = crate::auth::DEFAULT_SCOPE;
/// The commercial cloud's sign-in authority (also that of US Gov GCC).
pub(crate) const COMMERCIAL_AUTHORITY: &str = "https://login.microsoftonline.com";
/// The sign-in authority of US Gov GCC High and DoD.
pub(crate) const US_GOV_AUTHORITY: &str = "https://login.microsoftonline.us";

/// A Microsoft cloud that hosts the Defender for Endpoint API.
///
/// Its three values — the API base, the sign-in authority and the token
/// scope — always travel together: a token minted for one cloud's audience is
/// refused (403) by another's API.
///
/// | cloud | [`api_base`](Self::api_base) | [`authority_host`](Self::authority_host) | [`scope`](Self::scope) |
/// |---|---|---|---|
/// | [`Commercial`](Self::Commercial) | `https://api.security.microsoft.com` | `https://login.microsoftonline.com` | `https://api.securitycenter.microsoft.com/.default` |
/// | [`Geo`](Self::Geo) | `https://{region}.api.security.microsoft.com` | `https://login.microsoftonline.com` | `https://api.securitycenter.microsoft.com/.default` |
/// | [`UsGovGcc`](Self::UsGovGcc) | `https://api-gcc.securitycenter.microsoft.us` | `https://login.microsoftonline.com` | `https://api-gcc.securitycenter.microsoft.us/.default` |
/// | [`UsGovGccHigh`](Self::UsGovGccHigh), [`UsGovDod`](Self::UsGovDod) | `https://api-gov.securitycenter.microsoft.us` | `https://login.microsoftonline.us` | `https://api-gov.securitycenter.microsoft.us/.default` |
///
/// It parses from the names that [`Display`](fmt::Display) writes,
/// case-insensitively: `commercial`, `us`, `eu`, `uk`, `au`, `swa`, `ina`,
/// `aea`, `gcc`, `gcc-high` and `dod`.
///
/// ```
/// use defender_endpoint::{Cloud, Region};
///
/// let cloud: Cloud = "gcc-high".parse()?;
/// assert_eq!(cloud, Cloud::UsGovGccHigh);
/// assert_eq!(cloud.authority_host(), "https://login.microsoftonline.us");
/// assert_eq!("EU".parse::<Cloud>()?, Cloud::Geo(Region::Eu));
/// # Ok::<(), defender_endpoint::ParseCloudError>(())
/// ```
///
/// `Debug` and `Display` hide the user info (`user:password@`) of a
/// [`Cloud::Custom`]'s URLs.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Cloud {
    /// The commercial (worldwide) cloud, which routes to the nearest region.
    #[default]
    Commercial,
    /// The commercial cloud through one geography's host, to keep traffic in that region.
    Geo(Region),
    /// US Government Community Cloud (GCC).
    UsGovGcc,
    /// US Government Community Cloud High (GCC High).
    UsGovGccHigh,
    /// US Department of Defense cloud (DoD).
    UsGovDod,
    /// Any other deployment (a proxy, a sovereign cloud this enum does not list yet).
    Custom {
        /// The API base URL, like `https://api.security.microsoft.com`.
        api_base: String,
        /// The sign-in authority, like `https://login.microsoftonline.com`.
        authority_host: String,
        /// The token scope, like `https://api.securitycenter.microsoft.com/.default`.
        scope: String,
    },
}

/// A geography of the commercial cloud with an API host of its own
/// (`https://{region}.api.security.microsoft.com`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Region {
    /// United States (`us`).
    Us,
    /// Europe (`eu`).
    Eu,
    /// United Kingdom (`uk`).
    Uk,
    /// Australia (`au`).
    Au,
    /// Switzerland (`swa`).
    Swa,
    /// India (`ina`).
    Ina,
    /// United Arab Emirates (`aea`).
    Aea,
}

impl Region {
    /// Every region, in the order of the documentation.
    pub const ALL: [Region; 7] = [
        Region::Us,
        Region::Eu,
        Region::Uk,
        Region::Au,
        Region::Swa,
        Region::Ina,
        Region::Aea,
    ];

    /// The region's short name, the first label of its host (`eu`, `uk`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            Region::Us => "us",
            Region::Eu => "eu",
            Region::Uk => "uk",
            Region::Au => "au",
            Region::Swa => "swa",
            Region::Ina => "ina",
            Region::Aea => "aea",
        }
    }

    /// The region's API base, `https://{region}.api.security.microsoft.com`.
    pub fn api_base(self) -> &'static str {
        match self {
            Region::Us => "https://us.api.security.microsoft.com",
            Region::Eu => "https://eu.api.security.microsoft.com",
            Region::Uk => "https://uk.api.security.microsoft.com",
            Region::Au => "https://au.api.security.microsoft.com",
            Region::Swa => "https://swa.api.security.microsoft.com",
            Region::Ina => "https://ina.api.security.microsoft.com",
            Region::Aea => "https://aea.api.security.microsoft.com",
        }
    }
}

impl FromStr for Region {
    type Err = ParseCloudError;

    /// Parses a region's short name (`eu`, `uk`, …), ignoring case and surrounding
    /// white space.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let name = s.trim();
        Region::ALL
            .into_iter()
            .find(|region| region.as_str().eq_ignore_ascii_case(name))
            .ok_or_else(|| ParseCloudError {
                input: s.to_owned(),
                region: true,
            })
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Cloud {
    /// The API base URL of this cloud, without a trailing `/`.
    pub fn api_base(&self) -> &str {
        match self {
            Cloud::Commercial => crate::client::DEFAULT_BASE_URL,
            Cloud::Geo(region) => region.api_base(),
            Cloud::UsGovGcc => "https://api-gcc.securitycenter.microsoft.us",
            Cloud::UsGovGccHigh | Cloud::UsGovDod => "https://api-gov.securitycenter.microsoft.us",
            Cloud::Custom { api_base, .. } => api_base,
        }
    }

    /// The Microsoft Entra ID sign-in authority that issues this cloud's tokens.
    ///
    /// Give it to the credential, as in
    /// [`ClientSecretCredential::authority_host`](crate::ClientSecretCredential::authority_host).
    pub fn authority_host(&self) -> &str {
        match self {
            Cloud::Commercial | Cloud::Geo(_) | Cloud::UsGovGcc => COMMERCIAL_AUTHORITY,
            Cloud::UsGovGccHigh | Cloud::UsGovDod => US_GOV_AUTHORITY,
            Cloud::Custom { authority_host, .. } => authority_host,
        }
    }

    /// The scope the client asks its credential for (the API's `/.default`).
    ///
    /// The commercial audience is `https://api.securitycenter.microsoft.com`
    /// for every commercial host, geo hosts included.
    pub fn scope(&self) -> &str {
        match self {
            Cloud::Commercial | Cloud::Geo(_) => COMMERCIAL_SCOPE,
            Cloud::UsGovGcc => "https://api-gcc.securitycenter.microsoft.us/.default",
            Cloud::UsGovGccHigh | Cloud::UsGovDod => {
                "https://api-gov.securitycenter.microsoft.us/.default"
            }
            Cloud::Custom { scope, .. } => scope,
        }
    }
}

/// The cloud whose Defender API `host` is, for the current hosts Microsoft
/// documents: the commercial ones (geo and `api-*.securitycenter.microsoft.com`
/// regional hosts included) as [`Cloud::Commercial`], GCC's as
/// [`Cloud::UsGovGcc`], and GCC High's and DoD's (one host) as
/// [`Cloud::UsGovGccHigh`]. `None` for any other host (a proxy, a test server).
pub(crate) fn cloud_of_api_host(host: &str) -> Option<Cloud> {
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    let commercial = host == "api.security.microsoft.com"
        || host == "api.securitycenter.microsoft.com"
        || host
            .strip_suffix(".api.security.microsoft.com")
            .is_some_and(|region| !region.is_empty() && !region.contains('.'))
        || host
            .strip_suffix(".securitycenter.microsoft.com")
            .is_some_and(|name| name.starts_with("api-") && !name.contains('.'));
    if commercial {
        return Some(Cloud::Commercial);
    }
    match host.as_str() {
        "api-gcc.securitycenter.microsoft.us" | "api-gcc.security.microsoft.us" => {
            Some(Cloud::UsGovGcc)
        }
        "api-gov.securitycenter.microsoft.us" | "api-gov.security.microsoft.us" => {
            Some(Cloud::UsGovGccHigh)
        }
        _ => None,
    }
}

impl fmt::Debug for Cloud {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cloud::Commercial => f.write_str("Commercial"),
            Cloud::Geo(region) => f.debug_tuple("Geo").field(region).finish(),
            Cloud::UsGovGcc => f.write_str("UsGovGcc"),
            Cloud::UsGovGccHigh => f.write_str("UsGovGccHigh"),
            Cloud::UsGovDod => f.write_str("UsGovDod"),
            Cloud::Custom {
                api_base,
                authority_host,
                scope,
            } => f
                .debug_struct("Custom")
                .field("api_base", &redact_user_info(api_base))
                .field("authority_host", &redact_user_info(authority_host))
                .field("scope", scope)
                .finish(),
        }
    }
}

impl fmt::Display for Cloud {
    /// The name [`FromStr`] accepts (`commercial`, `eu`, `gcc-high`, …);
    /// `custom(<api base>)` for [`Cloud::Custom`], which does not parse back.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cloud::Commercial => f.write_str("commercial"),
            Cloud::Geo(region) => f.write_str(region.as_str()),
            Cloud::UsGovGcc => f.write_str("gcc"),
            Cloud::UsGovGccHigh => f.write_str("gcc-high"),
            Cloud::UsGovDod => f.write_str("dod"),
            Cloud::Custom { api_base, .. } => write!(f, "custom({})", redact_user_info(api_base)),
        }
    }
}

/// The names [`Cloud`] parses from, as listed in [`ParseCloudError`].
const CLOUD_NAMES: &str = "commercial, us, eu, uk, au, swa, ina, aea, gcc, gcc-high, dod";
/// The names [`Region`]'s `FromStr` accepts, for its error message.
const REGION_NAMES: &str = "us, eu, uk, au, swa, ina, aea";

impl FromStr for Cloud {
    type Err = ParseCloudError;

    /// Parses a cloud name, ignoring case and surrounding white space.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Ok(region) = s.parse::<Region>() {
            return Ok(Cloud::Geo(region));
        }
        let name = s.trim().to_ascii_lowercase();
        Ok(match name.as_str() {
            "commercial" => Cloud::Commercial,
            "gcc" => Cloud::UsGovGcc,
            "gcc-high" | "gcchigh" | "gcc_high" => Cloud::UsGovGccHigh,
            "dod" => Cloud::UsGovDod,
            _ => {
                return Err(ParseCloudError {
                    input: s.to_owned(),
                    region: false,
                })
            }
        })
    }
}

/// A string that names no [`Cloud`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseCloudError {
    input: String,
    /// A [`Region`] was asked for, not any cloud.
    region: bool,
}

impl ParseCloudError {
    /// The string that was not understood.
    pub fn input(&self) -> &str {
        &self.input
    }
}

impl fmt::Display for ParseCloudError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown {} \"{}\"; expected one of: {}",
            if self.region { "region" } else { "cloud" },
            self.input.escape_debug(),
            if self.region {
                REGION_NAMES
            } else {
                CLOUD_NAMES
            }
        )
    }
}

impl std::error::Error for ParseCloudError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_round_trips() {
        let mut all = vec![
            Cloud::Commercial,
            Cloud::UsGovGcc,
            Cloud::UsGovGccHigh,
            Cloud::UsGovDod,
        ];
        all.extend(Region::ALL.map(Cloud::Geo));
        for cloud in all {
            assert_eq!(cloud.to_string().parse::<Cloud>().unwrap(), cloud);
            assert_eq!(
                cloud.to_string().to_uppercase().parse::<Cloud>().unwrap(),
                cloud
            );
        }
    }

    #[test]
    fn debug_and_display_hide_user_info() {
        let cloud = Cloud::Custom {
            api_base: "https://svc:PW-1@proxy.example".into(),
            authority_host: "https://svc:pa/ss-PW-2@login.example".into(),
            scope: "api://x/.default".into(),
        };
        let debug = format!("{cloud:?}");
        assert_eq!(
            debug,
            r#"Custom { api_base: "https://***@proxy.example", authority_host: "https://***@login.example", scope: "api://x/.default" }"#
        );
        assert_eq!(cloud.to_string(), "custom(https://***@proxy.example)");
        let builder = format!("{:?}", crate::Client::builder().cloud(cloud));
        assert!(!builder.contains("PW"), "{builder}");
        assert_eq!(format!("{:?}", Cloud::Geo(Region::Eu)), "Geo(Eu)");
        assert_eq!(format!("{:?}", Cloud::UsGovGccHigh), "UsGovGccHigh");
    }

    #[test]
    fn regions_parse_from_their_short_names() {
        for region in Region::ALL {
            assert_eq!(region.as_str().parse::<Region>().unwrap(), region);
            assert_eq!(
                format!(" {} ", region.as_str().to_uppercase())
                    .parse::<Region>()
                    .unwrap(),
                region
            );
        }
        let err = "gcc".parse::<Region>().unwrap_err().to_string();
        assert_eq!(
            err,
            r#"unknown region "gcc"; expected one of: us, eu, uk, au, swa, ina, aea"#
        );
        assert!("".parse::<Region>().is_err());
    }

    #[test]
    fn unknown_names_list_the_accepted_ones() {
        let err = "mars".parse::<Cloud>().unwrap_err();
        assert_eq!(err.input(), "mars");
        let text = err.to_string();
        assert!(text.contains("\"mars\""), "{text}");
        assert!(text.contains(CLOUD_NAMES), "{text}");
        // Escaped once: a quote and a tab read as they would in Rust source.
        let text = "a\"b\tc".parse::<Cloud>().unwrap_err().to_string();
        assert!(text.starts_with(r#"unknown cloud "a\"b\tc";"#), "{text}");
    }
}
