//! The admin token: requests that change membership or leadership must carry
//! `Authorization: Bearer <token>`. Which requests those are is [`is_admin_request`];
//! the check is [`check_admin`], answered with 401 without a token and 403 with a wrong
//! one.

use hyper::header::AUTHORIZATION;
use hyper::{HeaderMap, Method};

use super::ApiError;

/// The secret that admin requests must present. Its `Debug` form hides it.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminToken(String);

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(..)")
    }
}

impl AdminToken {
    /// A token; surrounding whitespace (a token file's final newline) is dropped. An
    /// empty token is refused.
    pub fn new(token: &str) -> Result<AdminToken, String> {
        let token = token.trim();
        if token.is_empty() {
            return Err("the admin token is empty".into());
        }
        if !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("the admin token must be printable ASCII without spaces".into());
        }
        Ok(AdminToken(token.to_string()))
    }

    /// Whether `presented` is this token, in time that does not depend on where they
    /// differ.
    fn matches(&self, presented: &[u8]) -> bool {
        let expected = self.0.as_bytes();
        let mut diff = u8::from(expected.len() != presented.len());
        for (i, &e) in expected.iter().enumerate() {
            diff |= e ^ presented.get(i).copied().unwrap_or(!e);
        }
        diff == 0
    }
}

/// Whether a request changes membership or leadership, and so needs the admin token:
/// every request under `/cluster/` other than a `GET` (or `HEAD`).
pub fn is_admin_request(method: &Method, path: &str) -> bool {
    (path.starts_with("/cluster/") || path == "/cluster") && method != Method::GET && method != Method::HEAD
}

/// Checks the `Authorization: Bearer <token>` header of an admin request against
/// `expected`: 401 when it is missing or not a bearer token, 403 when the token is
/// wrong. With no token configured (`None`), every request passes: the node logs at
/// start that its admin requests are not authenticated.
pub fn check_admin(expected: Option<&AdminToken>, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = expected else {
        return Ok(());
    };
    let Some(value) = headers.get(AUTHORIZATION) else {
        return Err(ApiError::Unauthorized("this request needs the admin token: Authorization: Bearer <token>".into()));
    };
    let value = value.as_bytes();
    let presented = match value.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case(b"bearer ") => value.get(7..).unwrap_or_default(),
        _ => {
            return Err(ApiError::Unauthorized("the Authorization header must be `Bearer <token>`".into()));
        }
    };
    if expected.matches(presented.trim_ascii()) {
        Ok(())
    } else {
        Err(ApiError::Forbidden("wrong admin token".into()))
    }
}

#[cfg(test)]
mod tests {
    use hyper::header::HeaderValue;
    use hyper::StatusCode;

    use super::*;

    fn headers(auth: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(a) = auth {
            h.insert(AUTHORIZATION, HeaderValue::from_str(a).unwrap());
        }
        h
    }

    #[test]
    fn admin_requests_are_the_changes_under_cluster() {
        assert!(is_admin_request(&Method::POST, "/cluster/members"));
        assert!(is_admin_request(&Method::DELETE, "/cluster/members/3"));
        assert!(is_admin_request(&Method::PUT, "/cluster/leader"));
        assert!(is_admin_request(&Method::POST, "/cluster"));
        assert!(!is_admin_request(&Method::GET, "/cluster/members"));
        assert!(!is_admin_request(&Method::HEAD, "/cluster/members"));
        assert!(!is_admin_request(&Method::PUT, "/kv/cluster/x"));
        assert!(!is_admin_request(&Method::POST, "/clusters"));
    }

    #[test]
    fn no_token_is_401_a_wrong_one_403_the_right_one_passes() {
        let token = AdminToken::new("s3cret\n").unwrap();
        let t = Some(&token);
        let status = |auth: Option<&str>| check_admin(t, &headers(auth)).map_err(|e| e.status());
        assert_eq!(status(None), Err(StatusCode::UNAUTHORIZED));
        assert_eq!(status(Some("Basic czNjcmV0")), Err(StatusCode::UNAUTHORIZED));
        assert_eq!(status(Some("Bearer")), Err(StatusCode::UNAUTHORIZED));
        assert_eq!(status(Some("Bearer wrong")), Err(StatusCode::FORBIDDEN));
        assert_eq!(status(Some("Bearer s3cre")), Err(StatusCode::FORBIDDEN));
        assert_eq!(status(Some("Bearer s3cret2")), Err(StatusCode::FORBIDDEN));
        assert_eq!(status(Some("Bearer ")), Err(StatusCode::FORBIDDEN));
        assert_eq!(status(Some("Bearer s3cret")), Ok(()));
        assert_eq!(status(Some("bearer s3cret")), Ok(()));
        // Without a configured token, nothing is checked.
        assert_eq!(check_admin(None, &headers(None)), Ok(()));
    }

    #[test]
    fn refusals_have_a_json_error_body() {
        let token = AdminToken::new("t").unwrap();
        let e = check_admin(Some(&token), &headers(None)).unwrap_err();
        let r = e.into_response();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(r.headers()[hyper::header::CONTENT_TYPE], "application/json");
        let e = check_admin(Some(&token), &headers(Some("Bearer x"))).unwrap_err();
        assert_eq!(e.message(), "wrong admin token");
    }

    #[test]
    fn empty_or_spaced_tokens_are_refused_and_debug_hides_the_token() {
        assert!(AdminToken::new("  \n").is_err());
        assert!(AdminToken::new("a b").is_err());
        assert_eq!(format!("{:?}", AdminToken::new("secret").unwrap()), "AdminToken(..)");
    }
}
