//! Refusals of the storage service (401, 403) said in terms a user can act
//! on. The client crate keeps only the status and code of an error answer,
//! and cannot read the table service's JSON error at all; this policy reads
//! the answer itself: the service's message, the `AuthenticationErrorDetail`
//! that says why a token was refused, and, for a token that was accepted
//! but is not allowed, the data role the identity lacks.

use std::fmt;
use std::sync::Arc;

use azure_core::error::ErrorKind;
use azure_core::headers::{AUTHORIZATION, CONTENT_TYPE};
use azure_core::{Context, Policy, PolicyResult, Request};
use serde_json::Value;

/// The storage service a client talks to: which data role it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DataService {
    Table,
    Blob,
}

impl DataService {
    /// The role that reads and writes, and the one that only reads.
    fn roles(self) -> (&'static str, &'static str) {
        match self {
            DataService::Table => (
                "Storage Table Data Contributor",
                "Storage Table Data Reader",
            ),
            DataService::Blob => ("Storage Blob Data Contributor", "Storage Blob Data Reader"),
        }
    }

    fn name(self) -> &'static str {
        match self {
            DataService::Table => "tables",
            DataService::Blob => "blobs",
        }
    }
}

/// Turns a 401 or 403 answer into an error whose message explains it (a
/// [`Refusal`] inside the client crate's error, with the answer's status and
/// code). Per retry, so it sees each answer before the retry policy does.
#[derive(Debug)]
pub(crate) struct Refusals(pub(crate) DataService);

#[async_trait::async_trait]
impl Policy for Refusals {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        let bearer = request
            .headers()
            .get_optional_str(&AUTHORIZATION)
            .is_some_and(|value| value.starts_with("Bearer "));
        let response = next[0].send(ctx, request, &next[1..]).await?;
        let status = response.status();
        if !matches!(u16::from(status), 401 | 403) {
            return Ok(response);
        }
        let (status, headers, body) = response.deconstruct();
        let body = body.collect().await?;
        let code = headers
            .get_optional_string(&azure_core::headers::ERROR_CODE)
            .or_else(|| body_field(&body, headers.get_optional_str(&CONTENT_TYPE), "code"));
        let refusal = Refusal::read(
            u16::from(status),
            code.as_deref(),
            &body,
            headers.get_optional_str(&CONTENT_TYPE),
            bearer,
            self.0,
        );
        Err(azure_core::Error::new(
            ErrorKind::HttpResponse {
                status,
                error_code: code,
            },
            refusal,
        ))
    }
}

/// A refusal, explained: the crate's [`crate::Error::Storage`] takes its
/// text as the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Refusal(pub(crate) String);

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refusal {}

impl Refusal {
    /// Explains an answer of `status` and `code` to a request that carried
    /// a bearer token (or not).
    pub(crate) fn read(
        status: u16,
        code: Option<&str>,
        body: &[u8],
        content_type: Option<&str>,
        bearer: bool,
        service: DataService,
    ) -> Refusal {
        let message = body_field(body, content_type, "message")
            .and_then(|m| m.lines().next().map(|l| l.trim().to_owned()))
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| {
                if status == 401 {
                    "Unauthorized"
                } else {
                    "Forbidden"
                }
                .to_owned()
            });
        let detail = body_field(body, content_type, "AuthenticationErrorDetail")
            .map(|d| d.trim().to_owned())
            .filter(|d| !d.is_empty());
        let (contributor, reader) = service.roles();
        let code = code.unwrap_or_default();
        let token_refused = bearer
            && (status == 401
                || detail.is_some()
                || matches!(code, "AuthenticationFailed" | "InvalidAuthenticationInfo"));
        let text = match (bearer, code) {
            _ if token_refused => format!(
                "the storage service refused the token: {}",
                detail.unwrap_or(message)
            ),
            (true, "AuthorizationPermissionMismatch") => format!(
                "the identity signed in has no data role that allows this on the account's {}: \
                 assign it {contributor} ({reader} suffices to read only) ({message})",
                service.name()
            ),
            (true, "AuthorizationFailure") => format!(
                "{message} (the identity signed in needs {contributor} on the account, or \
                 {reader} to read only; the account's network rules may refuse this client too)"
            ),
            (false, "KeyBasedAuthenticationNotPermitted") => format!(
                "the account does not allow Shared Key authorization ({message}): sign in with \
                 Microsoft Entra ID instead (an identity with {contributor})"
            ),
            _ => match detail {
                Some(detail) => format!("{message} ({detail})"),
                None => message,
            },
        };
        Refusal(super::errors::redact_urls(&text))
    }
}

/// A field of a storage error answer: the table service's JSON
/// (`{"odata.error": {"code", "message": {"value"}, ...}}`) or the blob
/// service's XML (`<Error><Code>..</Code><Message>..</Message>..</Error>`).
fn body_field(body: &[u8], content_type: Option<&str>, field: &str) -> Option<String> {
    let xml = content_type.is_some_and(|t| t.contains("xml"))
        || body.trim_ascii_start().starts_with(b"<");
    if xml {
        let text = std::str::from_utf8(body).ok()?;
        let tag = capitalized(field);
        let start = text.find(&format!("<{tag}>"))? + tag.len() + 2;
        let end = start + text[start..].find(&format!("</{tag}>"))?;
        return Some(xml_unescaped(&text[start..end]));
    }
    let json: Value = serde_json::from_slice(body).ok()?;
    let error = json
        .get("odata.error")
        .or_else(|| json.get("error"))
        .unwrap_or(&json);
    let value = error.get(field).or_else(|| error.get(capitalized(field)))?;
    match value {
        Value::String(text) => Some(text.clone()),
        Value::Object(object) => object
            .get("value")
            .and_then(Value::as_str)
            .map(str::to_owned),
        _ => None,
    }
}

fn capitalized(field: &str) -> String {
    let mut chars = field.chars();
    chars
        .next()
        .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
        .unwrap_or_default()
}

fn xml_unescaped(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

#[cfg(test)]
mod tests {
    use super::*;

    const JSON: Option<&str> =
        Some("application/json;odata=minimalmetadata;streaming=true;charset=utf-8");
    const XML: Option<&str> = Some("application/xml");

    fn table(status: u16, code: &str, body: &str, bearer: bool) -> String {
        Refusal::read(
            status,
            Some(code),
            body.as_bytes(),
            JSON,
            bearer,
            DataService::Table,
        )
        .0
    }

    #[test]
    fn a_refused_token_says_why() {
        // Azurite's answer to an expired token.
        let body = r#"{"odata.error":{"code":"AuthenticationFailed","message":{"lang":"en-US","value":"Server failed to authenticate the request. Make sure the value of the Authorization header is formed correctly including the signature.\nRequestId:1\nTime:2025"},"AuthenticationErrorDetail":"Lifetime validation failed. The token is expired."}}"#;
        assert_eq!(
            table(403, "AuthenticationFailed", body, true),
            "the storage service refused the token: Lifetime validation failed. The token is expired."
        );
        let blob = "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>AuthenticationFailed</Code><Message>Server failed to authenticate the request.\nRequestId:1</Message><AuthenticationErrorDetail>Issuer validation failed. Issuer did not match.</AuthenticationErrorDetail></Error>";
        assert_eq!(
            Refusal::read(403, Some("AuthenticationFailed"), blob.as_bytes(), XML, true, DataService::Blob).0,
            "the storage service refused the token: Issuer validation failed. Issuer did not match."
        );
        assert_eq!(
            table(401, "InvalidAuthenticationInfo", "", true),
            "the storage service refused the token: Unauthorized"
        );
    }

    #[test]
    fn an_accepted_token_without_a_role_names_the_role() {
        let body = r#"{"odata.error":{"code":"AuthorizationPermissionMismatch","message":{"lang":"en-US","value":"This request is not authorized to perform this operation using this permission.\nRequestId:1"}}}"#;
        let text = table(403, "AuthorizationPermissionMismatch", body, true);
        assert!(
            text.contains("Storage Table Data Contributor")
                && text.contains("Storage Table Data Reader")
                && text.contains("not authorized to perform this operation using this permission"),
            "{text}"
        );
        let blob = "<Error><Code>AuthorizationPermissionMismatch</Code><Message>This request is not authorized to perform this operation using this permission.</Message></Error>";
        let text = Refusal::read(
            403,
            Some("AuthorizationPermissionMismatch"),
            blob.as_bytes(),
            XML,
            true,
            DataService::Blob,
        )
        .0;
        assert!(text.contains("Storage Blob Data Contributor"), "{text}");
        let text = table(
            403,
            "AuthorizationFailure",
            r#"{"odata.error":{"code":"AuthorizationFailure","message":{"value":"This request is not authorized to perform this operation."}}}"#,
            true,
        );
        assert!(text.contains("Storage Table Data Contributor"), "{text}");
    }

    #[test]
    fn shared_keys_and_sas_keep_the_service_message() {
        let body = r#"{"odata.error":{"code":"AuthorizationFailure","message":{"value":"This request is not authorized to perform this operation.\nRequestId:1"}}}"#;
        assert_eq!(
            table(403, "AuthorizationFailure", body, false),
            "This request is not authorized to perform this operation."
        );
        let text = table(
            403,
            "KeyBasedAuthenticationNotPermitted",
            r#"{"odata.error":{"code":"KeyBasedAuthenticationNotPermitted","message":{"value":"Key based authentication is not permitted on this storage account."}}}"#,
            false,
        );
        assert!(
            text.contains("Microsoft Entra ID") && text.contains("Storage Table Data Contributor"),
            "{text}"
        );
        assert_eq!(table(403, "X", "not json", false), "Forbidden");
    }
}
