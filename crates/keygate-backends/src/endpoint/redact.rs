//! The one way a URL is shown anywhere (`keygate backends`, `Debug`
//! output): without its user info, and with every query parameter whose
//! name says it holds a secret masked. Log lines and messages show no URL at all.

/// Words that make a query parameter secret when its name contains one
/// (ignoring case): `access_token`, `api_key`, `client_secret`,
/// `X-Amz-Signature`, `sslpassword`, `authToken`... A harmless parameter
/// caught by the rule (`sslkey`, a file path) is only masked.
const SECRET_WORDS: &[&str] = &[
    "token",
    "secret",
    "pass",
    "key",
    "auth",
    "signature",
    "credential",
];

/// Parameter names that carry a password without containing one of
/// [`SECRET_WORDS`] (matched whole, ignoring case).
const SECRET_NAMES: &[&str] = &["pwd"];

/// What a masked value reads as.
const MASK: &str = "***";

/// `url` without user info and with password-like query parameters
/// masked: `postgres://kg:pw@db:5432/wazuh?sslmode=require&password=x`
/// reads `postgres://db:5432/wazuh?sslmode=require&password=***`. A value
/// that is not a URL is not shown at all.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<not a URL>".into();
    };
    let (rest, fragment) = match rest.split_once('#') {
        Some((r, _)) => (r, "#***"),
        None => (rest, ""),
    };
    let (rest, query) = match rest.split_once('?') {
        Some((r, q)) => (r, Some(q)),
        None => (rest, None),
    };
    let end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let mut out = format!("{scheme}://{host}{path}");
    if let Some(query) = query {
        out.push('?');
        let parts: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) if is_secret_parameter(name) => format!("{name}={MASK}"),
                _ => pair.to_owned(),
            })
            .collect();
        out.push_str(&parts.join("&"));
    }
    out.push_str(fragment);
    out
}

/// Whether a query parameter's name is one that carries a secret: it
/// contains one of [`SECRET_WORDS`] or is one of [`SECRET_NAMES`], ignoring
/// case, after percent-decoding (`api%5Fkey` is `api_key`).
fn is_secret_parameter(name: &str) -> bool {
    let name = percent_encoding::percent_decode_str(name)
        .decode_utf8_lossy()
        .to_ascii_lowercase();
    SECRET_WORDS.iter().any(|word| name.contains(word)) || SECRET_NAMES.iter().any(|n| *n == name)
}

/// Whether `url` holds a password: in its user info (`user:pw@`) or in a
/// password-like query parameter.
pub fn has_inline_password(url: &str) -> bool {
    let Some((_, rest)) = url.split_once("://") else {
        return false;
    };
    let rest = rest.split('#').next().unwrap_or("");
    let (before_query, query) = rest.split_once('?').unwrap_or((rest, ""));
    let authority = before_query.split('/').next().unwrap_or("");
    let in_userinfo = authority.rsplit_once('@').is_some_and(|(userinfo, _)| {
        userinfo
            .split_once(':')
            .is_some_and(|(_, pw)| !pw.is_empty())
    });
    in_userinfo
        || query.split('&').any(|pair| {
            pair.split_once('=')
                .is_some_and(|(name, value)| is_secret_parameter(name) && !value.is_empty())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example: neither the user info nor the query's password
    /// survives, everything else does.
    #[test]
    fn userinfo_is_removed_and_password_parameters_are_masked() {
        assert_eq!(
            redact_url("postgres://kg@127.0.0.1:1/wazuh?password=hunter2"),
            "postgres://127.0.0.1:1/wazuh?password=***"
        );
        assert_eq!(
            redact_url("mysql://kg:s3cr%40t@db:3306/wazuh?ssl-mode=REQUIRED&PWD=x&Token=y"),
            "mysql://db:3306/wazuh?ssl-mode=REQUIRED&PWD=***&Token=***"
        );
        assert_eq!(
            redact_url("redis://:hunter2@10.0.0.5:6379/0"),
            "redis://10.0.0.5:6379/0"
        );
        assert_eq!(
            redact_url("unix:///run/redis.sock?db=1&pass=hunter2"),
            "unix:///run/redis.sock?db=1&pass=***"
        );
        assert_eq!(
            redact_url("postgres://db/w?sslpassword=a&secret=b&auth=c&user=a@b"),
            "postgres://db/w?sslpassword=***&secret=***&auth=***&user=a@b"
        );
        assert_eq!(redact_url("ldap://h:389#pw"), "ldap://h:389#***");
        assert_eq!(redact_url("redis://h:1/0"), "redis://h:1/0");
        assert_eq!(redact_url("p@ss"), "<not a URL>");
    }

    /// A parameter is secret when its name contains token, secret, pass,
    /// key, auth, signature or credential in any case (percent-encoded
    /// too): the names APIs really use are masked, the others shown.
    #[test]
    fn parameters_whose_name_contains_a_secret_word_are_masked() {
        for name in [
            "access_token",
            "api_key",
            "client_secret",
            "X-Amz-Signature",
            "X-Amz-Credential",
            "authToken",
            "sslpassword",
            "passwd",
            "APIKEY",
            "Refresh-Token",
            "api%5Fkey",
            "%74oken",
            "sig_signature",
            "pwd",
        ] {
            let url = format!("https://inv.example/api?page=2&{name}=hunter2&sort=id");
            assert_eq!(
                redact_url(&url),
                format!("https://inv.example/api?page=2&{name}=***&sort=id"),
                "{name}"
            );
            assert!(has_inline_password(&url), "{name}");
        }
        for name in ["page", "sslmode", "user", "limit", "ssl-mode", "dbname"] {
            let url = format!("https://inv.example/api?{name}=visible");
            assert_eq!(redact_url(&url), url, "{name}");
        }
    }

    #[test]
    fn inline_passwords_are_found_in_userinfo_and_query() {
        assert!(has_inline_password("mysql://kg:pw@db/w"));
        assert!(has_inline_password("postgres://kg@db/w?Password=x"));
        assert!(has_inline_password("redis://:pw@h:6379/0"));
        assert!(!has_inline_password("mysql://kg@db/w"));
        assert!(!has_inline_password("postgres://db/w?user=a:b@c"));
        assert!(!has_inline_password("redis://h:6379/0?password="));
    }
}
