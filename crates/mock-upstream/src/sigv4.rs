//! AWS Signature Version 4 verification (header-signed requests, as the AWS SDKs send them).

use std::fmt::Write as _;

use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// Why a request did not verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SigError {
    /// No (or a non-SigV4) `Authorization` header, or required parts missing/malformed.
    Malformed(String),
    /// The access key id is not the configured one.
    UnknownAccessKey,
    /// The credential scope names another service, or a date other than `x-amz-date`'s.
    Scope(String),
    /// Well-formed, but the signature differs; carries the canonical request the mock computed.
    Mismatch { canonical_request: String },
}

/// The request as received.
pub struct SignedRequest<'a> {
    pub method: &'a str,
    /// The raw (still percent-encoded) path.
    pub path: &'a str,
    /// The raw query string, without `?`.
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    /// Used for a signed `host` header when the request has none (HTTP/2 `:authority`).
    pub authority: Option<&'a str>,
    pub body: &'a [u8],
}

/// The parsed `Authorization: AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthHeader {
    pub access_key_id: String,
    pub date: String,
    pub region: String,
    pub service: String,
    pub signed_headers: Vec<String>,
    pub signature: String,
}

pub fn parse_authorization(value: &str) -> Result<AuthHeader, SigError> {
    let rest = value
        .trim()
        .strip_prefix(ALGORITHM)
        .ok_or_else(|| SigError::Malformed(format!("Authorization must start with {ALGORITHM}")))?;
    let (mut credential, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let Some((k, v)) = part.trim().split_once('=') else {
            continue;
        };
        match k.trim() {
            "Credential" => credential = Some(v.trim()),
            "SignedHeaders" => signed = Some(v.trim()),
            "Signature" => signature = Some(v.trim()),
            _ => {}
        }
    }
    let missing =
        |what: &str| SigError::Malformed(format!("Authorization header requires '{what}' parameter."));
    let credential = credential.ok_or_else(|| missing("Credential"))?;
    let signed = signed.ok_or_else(|| missing("SignedHeaders"))?;
    let signature = signature.ok_or_else(|| missing("Signature"))?;
    let parts: Vec<&str> = credential.split('/').collect();
    let [akid, date, region, service, terminator] = parts.as_slice() else {
        return Err(SigError::Malformed(format!(
            "Credential should have 5 parts: AKID/date/region/service/aws4_request, got '{credential}'"
        )));
    };
    if *terminator != "aws4_request" {
        return Err(SigError::Malformed(
            "Credential should be scoped with a valid terminator: 'aws4_request'".to_string(),
        ));
    }
    Ok(AuthHeader {
        access_key_id: (*akid).to_string(),
        date: (*date).to_string(),
        region: (*region).to_string(),
        service: (*service).to_string(),
        signed_headers: signed.split(';').map(|h| h.trim().to_ascii_lowercase()).collect(),
        signature: signature.to_ascii_lowercase(),
    })
}

/// SigV4 URI encoding: everything but `A-Za-z0-9-_.~` as `%XX` (uppercase); `/` too unless `keep_slash`.
pub fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') || (keep_slash && b == b'/') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(h) = bytes.get(i + 1..i + 3)
            && let Ok(hs) = std::str::from_utf8(h)
            && let Ok(v) = u8::from_str_radix(hs, 16)
        {
            out.push(v);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Canonical URI for non-S3 services: the path as sent, each segment encoded once more.
pub fn canonical_uri(raw_path: &str) -> String {
    if raw_path.is_empty() {
        return "/".to_string();
    }
    uri_encode(raw_path, true)
}

/// Canonical query string: parameters decoded, re-encoded strictly, sorted by name then value.
pub fn canonical_query(raw_query: Option<&str>) -> String {
    let mut params: Vec<(String, String)> = raw_query
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                uri_encode(&percent_decode(k), false),
                uri_encode(&percent_decode(v), false),
            )
        })
        .collect();
    params.sort();
    params
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// Trimmed value with inner whitespace runs collapsed to one space.
fn canonical_value(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC accepts keys of any length; the error branch cannot happen.
    match HmacSha256::new_from_slice(key) {
        Ok(mut m) => {
            m.update(data);
            m.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    }
}

/// The canonical request from already-canonical pieces; `headers` are `(lowercase name, value)`
/// pairs for exactly the signed headers (values are trimmed / collapsed here).
pub fn canonical_request(
    method: &str,
    raw_path: &str,
    raw_query: Option<&str>,
    headers: &[(String, String)],
    payload_hash: &str,
) -> String {
    let mut hs: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), canonical_value(v)))
        .collect();
    hs.sort();
    let mut out = String::new();
    let _ = writeln!(out, "{method}");
    let _ = writeln!(out, "{}", canonical_uri(raw_path));
    let _ = writeln!(out, "{}", canonical_query(raw_query));
    for (k, v) in &hs {
        let _ = writeln!(out, "{k}:{v}");
    }
    let _ = writeln!(out);
    let names: Vec<&str> = hs.iter().map(|(k, _)| k.as_str()).collect();
    let _ = writeln!(out, "{}", names.join(";"));
    out.push_str(payload_hash);
    out
}

pub fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical_request.as_bytes())
    )
}

/// Hex signature of `string_to_sign` with the key derived from `secret` for this scope.
pub fn signature(secret: &str, date: &str, region: &str, service: &str, string_to_sign: &str) -> String {
    let k_date = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k_region = hmac(&k_date, region.as_bytes());
    let k_service = hmac(&k_region, service.as_bytes());
    let k_signing = hmac(&k_service, b"aws4_request");
    hex::encode(hmac(&k_signing, string_to_sign.as_bytes()))
}

/// Verify a header-signed request for `service` against one credential pair.
pub fn verify(
    req: &SignedRequest<'_>,
    service: &str,
    access_key_id: &str,
    secret: &str,
) -> Result<AuthHeader, SigError> {
    let header = |name: &str| -> Option<String> {
        let vals: Vec<String> = req
            .headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        (!vals.is_empty()).then(|| vals.join(","))
    };
    let auth_value = header("authorization")
        .ok_or_else(|| SigError::Malformed("Missing Authentication Token".to_string()))?;
    let auth = parse_authorization(&auth_value)?;
    if auth.access_key_id != access_key_id {
        return Err(SigError::UnknownAccessKey);
    }
    let amz_date = header("x-amz-date").ok_or_else(|| {
        SigError::Malformed(
            "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."
                .to_string(),
        )
    })?;
    if auth.service != service {
        return Err(SigError::Scope(format!(
            "Credential should be scoped to correct service: '{service}'."
        )));
    }
    if !amz_date.starts_with(&auth.date) {
        return Err(SigError::Scope(format!(
            "Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '{}' != '{}'",
            auth.date,
            amz_date.get(..8).unwrap_or(&amz_date)
        )));
    }
    if !auth.signed_headers.iter().any(|h| h == "host") {
        return Err(SigError::Malformed(
            "'Host' or ':authority' must be a 'SignedHeader' in the AWS Authorization.".to_string(),
        ));
    }
    let mut signed = Vec::with_capacity(auth.signed_headers.len());
    for name in &auth.signed_headers {
        let value = match header(name) {
            Some(v) => v,
            None if name == "host" => req.authority.unwrap_or_default().to_string(),
            None => String::new(),
        };
        signed.push((name.clone(), value));
    }
    let payload_hash = header("x-amz-content-sha256").unwrap_or_else(|| sha256_hex(req.body));
    let creq = canonical_request(req.method, req.path, req.query, &signed, &payload_hash);
    let scope = format!("{}/{}/{service}/aws4_request", auth.date, auth.region);
    let sts = string_to_sign(&amz_date, &scope, &creq);
    let expected = signature(secret, &auth.date, &auth.region, service, &sts);
    if expected == auth.signature {
        Ok(auth)
    } else {
        Err(SigError::Mismatch {
            canonical_request: creq,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use axum::http::HeaderValue;

    /// The IAM `ListUsers` example from the AWS SigV4 documentation.
    #[test]
    fn aws_documentation_example() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "content-type",
            HeaderValue::from_static("application/x-www-form-urlencoded; charset=utf-8"),
        );
        headers.insert("host", HeaderValue::from_static("iam.amazonaws.com"));
        headers.insert("x-amz-date", HeaderValue::from_static("20150830T123600Z"));
        let signed: Vec<(String, String)> = ["content-type", "host", "x-amz-date"]
            .iter()
            .map(|h| ((*h).to_string(), headers[*h].to_str().unwrap().to_string()))
            .collect();
        let creq = canonical_request(
            "GET",
            "/",
            Some("Action=ListUsers&Version=2010-05-08"),
            &signed,
            &sha256_hex(b""),
        );
        assert_eq!(
            creq,
            "GET\n/\nAction=ListUsers&Version=2010-05-08\n\
             content-type:application/x-www-form-urlencoded; charset=utf-8\nhost:iam.amazonaws.com\n\
             x-amz-date:20150830T123600Z\n\ncontent-type;host;x-amz-date\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            sha256_hex(creq.as_bytes()),
            "f536975d06c0309214f805bb90ccff089219ecd68b2577efef23edd43b7e1a59"
        );
        let sts = string_to_sign("20150830T123600Z", "20150830/us-east-1/iam/aws4_request", &creq);
        let secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
        let sig = signature(secret, "20150830", "us-east-1", "iam", &sts);
        assert_eq!(
            sig,
            "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
        );

        // The same through `verify`, with the service as a parameter.
        headers.insert(
            "authorization",
            HeaderValue::from_str(&format!(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, \
                 SignedHeaders=content-type;host;x-amz-date, Signature={sig}"
            ))
            .unwrap(),
        );
        let req = SignedRequest {
            method: "GET",
            path: "/",
            query: Some("Action=ListUsers&Version=2010-05-08"),
            headers: &headers,
            authority: None,
            body: b"",
        };
        let auth = verify(&req, "iam", "AKIDEXAMPLE", secret).unwrap();
        assert_eq!(auth.region, "us-east-1");
        assert!(matches!(
            verify(&req, "iam", "AKIDEXAMPLE", "wrong"),
            Err(SigError::Mismatch { .. })
        ));
        assert_eq!(
            verify(&req, "iam", "OTHER", secret),
            Err(SigError::UnknownAccessKey)
        );
        assert!(matches!(
            verify(&req, "bedrock", "AKIDEXAMPLE", secret),
            Err(SigError::Scope(_))
        ));
    }

    #[test]
    fn canonical_uri_double_encodes() {
        assert_eq!(
            canonical_uri("/model/anthropic.claude-3-haiku-20240307-v1%3A0/converse"),
            "/model/anthropic.claude-3-haiku-20240307-v1%253A0/converse"
        );
        assert_eq!(canonical_uri(""), "/");
        assert_eq!(canonical_uri("/a b/c+d"), "/a%20b/c%2Bd");
    }

    #[test]
    fn canonical_query_sorts_and_encodes() {
        assert_eq!(canonical_query(None), "");
        assert_eq!(canonical_query(Some("b=2&a=1&a=0&c")), "a=0&a=1&b=2&c=");
        assert_eq!(canonical_query(Some("x=a%20b&y=%2f")), "x=a%20b&y=%2F");
    }

    #[test]
    fn canonical_values_are_trimmed_and_collapsed() {
        let creq = canonical_request(
            "POST",
            "/",
            None,
            &[("X-Amz-Date".into(), "  a   b  ".into())],
            "h",
        );
        assert!(creq.contains("\nx-amz-date:a b\n"), "{creq}");
    }
}
