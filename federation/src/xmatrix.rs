//! X-Matrix request authentication (Matrix server-server API, "Authentication" → "Request
//! Authentication"): how a server signs each federation request it sends and how the receiver
//! checks it before doing anything else.
//!
//! The signed object is `{method, uri, origin, destination, content?}`, signed with the server's
//! key by the JSON signing algorithm (Appendices, "Signing JSON"), and travels in
//! `Authorization: X-Matrix origin="…",destination="…",key="ed25519:…",sig="…"`.
//!
//! This module owns the header's text form (a strict formatter, a lenient parser as RFC 7235 and
//! the spec ask) and the signature over the request. Finding the origin's key is the caller's job:
//! look it up by [`XMatrixAuth::origin`] and [`XMatrixAuth::key_id`], then call
//! [`verify_request`].

use std::fmt;

use serde_json::{Map, Value};

use crate::canonical_json::{CanonicalJsonError, to_canonical_string};
use crate::ids::ServerName;
use crate::signing::{KeyId, SigningKey, VerifyKey};
use crate::unpadded_base64;

/// The authorization scheme, compared case-insensitively on input.
pub const SCHEME: &str = "X-Matrix";

/// Why a request's X-Matrix authorization was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AuthError {
    /// The header does not use the `X-Matrix` scheme.
    #[error("authorization scheme is not X-Matrix")]
    WrongScheme,
    /// The parameter list does not follow the `name=value, …` syntax.
    #[error("malformed X-Matrix header: {0}")]
    MalformedHeader(&'static str),
    /// A required parameter (`origin`, `key` or `sig`) is absent.
    #[error("X-Matrix header has no {0} parameter")]
    MissingParameter(&'static str),
    /// A parameter we use appears twice, which would make the header ambiguous.
    #[error("X-Matrix header repeats the {0} parameter")]
    DuplicateParameter(&'static str),
    /// `origin` is not a valid server name.
    #[error("X-Matrix origin is not a valid server name")]
    InvalidOrigin,
    /// `destination` is not a valid server name.
    #[error("X-Matrix destination is not a valid server name")]
    InvalidDestination,
    /// `key` is not an `ed25519:<version>` key id.
    #[error("X-Matrix key is not an ed25519 key id")]
    InvalidKeyId,
    /// `sig` is not valid base64.
    #[error("X-Matrix signature is not valid base64")]
    SignatureNotBase64,
    /// The request was addressed to another server; the spec requires a 401.
    #[error("request is addressed to {actual}, not to {expected}")]
    WrongDestination {
        /// Our server name.
        expected: String,
        /// The destination named in the header.
        actual: String,
    },
    /// The request body has no canonical JSON form, so it cannot have been signed.
    #[error("request body has no canonical JSON form: {0}")]
    Canonical(#[from] CanonicalJsonError),
    /// The signature does not match the request and the origin's key.
    #[error("X-Matrix signature verification failed")]
    BadSignature,
}

/// The parameters of an `Authorization: X-Matrix …` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XMatrixAuth {
    /// The sending server.
    pub origin: ServerName,
    /// The receiving server; absent only in requests from servers older than Matrix 1.3.
    pub destination: Option<ServerName>,
    /// The sender's key that made the signature.
    pub key_id: KeyId,
    /// The raw ed25519 signature bytes.
    pub signature: Vec<u8>,
}

/// Signs a request as `origin` and returns its authorization parameters.
///
/// `uri` is the request target exactly as sent: the path from `/_matrix/…` with `?` and the
/// query string if any, without scheme or host. `content` is the JSON body, if the request has
/// one.
pub fn sign_request(
    origin: &ServerName,
    destination: &ServerName,
    method: &str,
    uri: &str,
    content: Option<&Value>,
    key: &SigningKey,
) -> Result<XMatrixAuth, AuthError> {
    let signed = request_json(method, uri, origin, destination, content)?;
    Ok(XMatrixAuth {
        origin: origin.clone(),
        destination: Some(destination.clone()),
        key_id: key.key_id().clone(),
        signature: key.sign(signed.as_bytes()),
    })
}

/// Checks a request's authorization: that it is addressed to us and that `key` (the origin's
/// key named by `auth.key_id`, which the caller looked up) signed this method, target and body.
///
/// A header without `destination` is checked as if it named `our_name`, which is what a
/// pre-1.3 sender signed.
pub fn verify_request(
    auth: &XMatrixAuth,
    method: &str,
    uri: &str,
    our_name: &ServerName,
    content: Option<&Value>,
    key: &VerifyKey,
) -> Result<(), AuthError> {
    if let Some(destination) = &auth.destination
        && destination != our_name
    {
        return Err(AuthError::WrongDestination {
            expected: our_name.to_string(),
            actual: destination.to_string(),
        });
    }
    let signed = request_json(method, uri, &auth.origin, our_name, content)?;
    key.verify(signed.as_bytes(), &auth.signature)
        .map_err(|_| AuthError::BadSignature)
}

/// The canonical JSON of the object a request signature covers ("Request Authentication",
/// step 1). It has no `signatures` or `unsigned` members, so signing it directly is the same as
/// the JSON signing algorithm.
fn request_json(
    method: &str,
    uri: &str,
    origin: &ServerName,
    destination: &ServerName,
    content: Option<&Value>,
) -> Result<String, CanonicalJsonError> {
    let mut object = Map::new();
    object.insert("method".into(), Value::String(method.to_owned()));
    object.insert("uri".into(), Value::String(uri.to_owned()));
    object.insert("origin".into(), Value::String(origin.to_string()));
    object.insert("destination".into(), Value::String(destination.to_string()));
    if let Some(content) = content {
        object.insert("content".into(), content.clone());
    }
    to_canonical_string(&Value::Object(object))
}

impl XMatrixAuth {
    /// Parses the value of an `Authorization` header.
    ///
    /// Lenient where the spec asks for it: scheme and parameter names in any case, parameters
    /// in any order, values quoted (with backslash escapes) or bare (colons, `/`, `+` and `=`
    /// included, as older servers send), whitespace around `=` and commas, empty list elements
    /// and unknown parameters ignored, `destination` optional. Strict where leniency would be
    /// dangerous: a repeated `origin`, `destination`, `key` or `sig` is refused.
    pub fn parse(header: &str) -> Result<Self, AuthError> {
        let header = header.trim_matches(is_ows);
        let (scheme, params) = match header.find(is_ows) {
            Some(i) => header.split_at(i),
            None => (header, ""),
        };
        if !scheme.eq_ignore_ascii_case(SCHEME) {
            return Err(AuthError::WrongScheme);
        }

        let mut origin = None;
        let mut destination = None;
        let mut key = None;
        let mut sig = None;
        let mut cursor = Cursor { rest: params };
        while let Some((name, value)) = cursor.next_param()? {
            let (slot, name) = match name.to_ascii_lowercase().as_str() {
                "origin" => (&mut origin, "origin"),
                "destination" => (&mut destination, "destination"),
                "key" => (&mut key, "key"),
                "sig" => (&mut sig, "sig"),
                // "Unknown parameters are ignored."
                _ => continue,
            };
            if slot.replace(value).is_some() {
                return Err(AuthError::DuplicateParameter(name));
            }
        }

        let origin = origin.ok_or(AuthError::MissingParameter("origin"))?;
        let key = key.ok_or(AuthError::MissingParameter("key"))?;
        let sig = sig.ok_or(AuthError::MissingParameter("sig"))?;
        Ok(Self {
            origin: ServerName::parse(&origin).map_err(|_| AuthError::InvalidOrigin)?,
            destination: destination
                .map(|d| ServerName::parse(&d).map_err(|_| AuthError::InvalidDestination))
                .transpose()?,
            key_id: KeyId::parse(&key).map_err(|_| AuthError::InvalidKeyId)?,
            signature: unpadded_base64::decode(&sig).map_err(|_| AuthError::SignatureNotBase64)?,
        })
    }
}

impl fmt::Display for XMatrixAuth {
    /// The header value, in the most compatible form the spec describes: one space after the
    /// scheme, lower-case names, every value quoted, `destination` always sent when known.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME} origin={}", Quoted(self.origin.as_str()))?;
        if let Some(destination) = &self.destination {
            write!(f, ",destination={}", Quoted(destination.as_str()))?;
        }
        write!(
            f,
            ",key={},sig={}",
            Quoted(self.key_id.as_str()),
            Quoted(&unpadded_base64::encode(&self.signature))
        )
    }
}

/// Writes a quoted-string. Server names, key ids and base64 never contain `"` or `\`, but
/// escaping keeps the formatter correct for any input.
struct Quoted<'a>(&'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        for c in self.0.chars() {
            if c == '"' || c == '\\' {
                f.write_str("\\")?;
            }
            write!(f, "{c}")?;
        }
        f.write_str("\"")
    }
}

/// Optional whitespace in HTTP headers: space and horizontal tab.
fn is_ows(c: char) -> bool {
    c == ' ' || c == '\t'
}

/// RFC 7230 `tchar`, the characters of a parameter name.
fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

/// Walks the `name=value, …` list after the scheme. Every split happens at an ASCII character
/// found by `find`, so slicing never lands inside a multi-byte character.
struct Cursor<'a> {
    rest: &'a str,
}

impl<'a> Cursor<'a> {
    /// The next `(name, unescaped value)`, or `None` at the end of the list.
    fn next_param(&mut self) -> Result<Option<(&'a str, String)>, AuthError> {
        // RFC 7230's list rule allows empty elements, so runs of commas are skipped.
        self.rest = self.rest.trim_start_matches(|c| is_ows(c) || c == ',');
        if self.rest.is_empty() {
            return Ok(None);
        }
        let name_end = self.rest.find(|c| !is_tchar(c)).unwrap_or(self.rest.len());
        let (name, after) = self.rest.split_at(name_end);
        if name.is_empty() {
            return Err(AuthError::MalformedHeader("expected a parameter name"));
        }
        let after = after.trim_start_matches(is_ows);
        let after = after.strip_prefix('=').ok_or(AuthError::MalformedHeader(
            "expected '=' after a parameter name",
        ))?;
        let after = after.trim_start_matches(is_ows);
        let (value, after) = match after.strip_prefix('"') {
            Some(quoted) => unquote(quoted)?,
            None => {
                let end = after
                    .find(|c| is_ows(c) || c == ',' || c == '"')
                    .unwrap_or(after.len());
                if end == 0 {
                    return Err(AuthError::MalformedHeader("empty parameter value"));
                }
                let (bare, after) = after.split_at(end);
                (bare.to_owned(), after)
            }
        };
        let after = after.trim_start_matches(is_ows);
        if !(after.is_empty() || after.starts_with(',')) {
            return Err(AuthError::MalformedHeader(
                "expected ',' between parameters",
            ));
        }
        self.rest = after;
        Ok(Some((name, value)))
    }
}

/// Reads a quoted-string body (after the opening quote), replacing each backslash-character pair
/// with the character, and returns the value and what follows the closing quote.
fn unquote(s: &str) -> Result<(String, &str), AuthError> {
    let mut value = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((value, s.get(i + 1..).unwrap_or_default())),
            '\\' => match chars.next() {
                Some((_, escaped)) => value.push(escaped),
                None => break,
            },
            _ => value.push(c),
        }
    }
    Err(AuthError::MalformedHeader("unterminated quoted value"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing::sign_json;
    use serde_json::json;

    fn name(s: &str) -> ServerName {
        ServerName::parse(s).unwrap()
    }

    fn key() -> SigningKey {
        let seed =
            unpadded_base64::decode_array("YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1").unwrap();
        SigningKey::from_seed(KeyId::ed25519("1").unwrap(), seed).unwrap()
    }

    fn sample() -> XMatrixAuth {
        XMatrixAuth {
            origin: name("origin.example"),
            destination: Some(name("dest.example:8448")),
            key_id: KeyId::ed25519("key1").unwrap(),
            signature: vec![1, 2, 3, 250],
        }
    }

    #[test]
    fn formats_like_the_spec_example() {
        assert_eq!(
            sample().to_string(),
            r#"X-Matrix origin="origin.example",destination="dest.example:8448",key="ed25519:key1",sig="AQID+g""#
        );
        let mut old = sample();
        old.destination = None;
        assert_eq!(
            old.to_string(),
            r#"X-Matrix origin="origin.example",key="ed25519:key1",sig="AQID+g""#
        );
        assert_eq!(Quoted(r#"a"b\c"#).to_string(), r#""a\"b\\c""#);
    }

    #[test]
    fn round_trips() {
        let auth = sample();
        assert_eq!(XMatrixAuth::parse(&auth.to_string()).unwrap(), auth);
    }

    #[test]
    fn lenient_parsing() {
        let expected = sample();
        let variants = [
            // any order, bare values with colons, '+' and '=' padding
            r#"X-Matrix sig=AQID+g==,key=ed25519:key1,destination=dest.example:8448,origin=origin.example"#,
            // case-insensitive scheme and names, extra spaces and tabs, empty list elements
            "x-matrix \t ORIGIN = \"origin.example\" ,, Destination=\"dest.example:8448\",\tKey=\"ed25519:key1\" , SIG=\"AQID+g\" ,",
            // backslash escapes inside quotes, unknown parameters (quoted and bare) ignored
            r#"X-MATRIX origin="origin\.example",foo="x,\"y\"",destination="dest.example:8448",bar=baz,key="ed25519:key1",sig="AQID\+g""#,
            // surrounding whitespace
            "  X-Matrix origin=origin.example,destination=dest.example:8448,key=ed25519:key1,sig=AQID+g  ",
        ];
        for header in variants {
            assert_eq!(XMatrixAuth::parse(header).unwrap(), expected, "{header}");
        }
    }

    #[test]
    fn missing_destination_is_tolerated() {
        let auth =
            XMatrixAuth::parse(r#"X-Matrix origin=origin.example,key="ed25519:key1",sig="AQID+g""#)
                .unwrap();
        assert_eq!(auth.destination, None);
    }

    #[test]
    fn parse_errors() {
        let cases: &[(&str, AuthError)] = &[
            ("", AuthError::WrongScheme),
            ("Bearer abc", AuthError::WrongScheme),
            ("X-Matrixorigin=a", AuthError::WrongScheme),
            ("X-Matrix", AuthError::MissingParameter("origin")),
            (
                "X-Matrix key=ed25519:1,sig=AQID",
                AuthError::MissingParameter("origin"),
            ),
            (
                "X-Matrix origin=a,sig=AQID",
                AuthError::MissingParameter("key"),
            ),
            (
                "X-Matrix origin=a,key=ed25519:1",
                AuthError::MissingParameter("sig"),
            ),
            (
                "X-Matrix origin=a,origin=b,key=ed25519:1,sig=AQID",
                AuthError::DuplicateParameter("origin"),
            ),
            (
                "X-Matrix origin=a,Sig=AQID,key=ed25519:1,sig=AQID",
                AuthError::DuplicateParameter("sig"),
            ),
            (
                r#"X-Matrix origin="a"#,
                AuthError::MalformedHeader("unterminated quoted value"),
            ),
            (
                r#"X-Matrix origin="a\"#,
                AuthError::MalformedHeader("unterminated quoted value"),
            ),
            (
                "X-Matrix origin",
                AuthError::MalformedHeader("expected '=' after a parameter name"),
            ),
            (
                "X-Matrix origin=,key=x",
                AuthError::MalformedHeader("empty parameter value"),
            ),
            (
                "X-Matrix origin=a b,key=x",
                AuthError::MalformedHeader("expected ',' between parameters"),
            ),
            (
                r#"X-Matrix origin="a"b,key=x"#,
                AuthError::MalformedHeader("expected ',' between parameters"),
            ),
            (
                "X-Matrix =a",
                AuthError::MalformedHeader("expected a parameter name"),
            ),
            (
                "X-Matrix origin=bad_host!,key=ed25519:1,sig=AQID",
                AuthError::InvalidOrigin,
            ),
            (
                "X-Matrix origin=a,destination=\"\",key=ed25519:1,sig=AQID",
                AuthError::InvalidDestination,
            ),
            (
                "X-Matrix origin=a,key=rsa:1,sig=AQID",
                AuthError::InvalidKeyId,
            ),
            (
                "X-Matrix origin=a,key=ed25519:1,sig=***",
                AuthError::SignatureNotBase64,
            ),
        ];
        for (header, expected) in cases {
            assert_eq!(
                XMatrixAuth::parse(header).as_ref(),
                Err(expected),
                "{header}"
            );
        }
    }

    /// Garbage never panics: every prefix of valid and hostile headers, and a sweep of
    /// awkward characters, either parses or returns an error.
    #[test]
    fn garbage_does_not_panic() {
        let seeds = [
            sample().to_string(),
            "X-Matrix origin=\"é😀\\\u{0}\",key=\"\\\\\",,=,\"\"\",sig=ü".to_owned(),
            "X-Matrix \u{2028}origin=日本,destination=\"[::1]:8448\",key=ed25519:_,sig=".to_owned(),
        ];
        for seed in &seeds {
            for (i, _) in seed.char_indices() {
                let _ = XMatrixAuth::parse(&seed[..i]);
                let _ = XMatrixAuth::parse(&seed[i..]);
            }
        }
        let alphabet = ['"', '\\', ',', '=', ' ', '\t', 'a', ':', 'é', '\u{0}'];
        let mut header = String::from("X-Matrix ");
        for i in 0..2_000usize {
            header.push(alphabet[(i * 7 + i / 3) % alphabet.len()]);
            let _ = XMatrixAuth::parse(&header);
        }
    }

    #[test]
    fn signs_what_the_spec_signs() {
        let key = key();
        let origin = name("origin.example");
        let destination = name("dest.example");
        let content = json!({"pdus": [], "edus": [{"edu_type": "m.typing"}]});
        let uri = "/_matrix/federation/v1/send/123?x=%20y";
        let auth = sign_request(&origin, &destination, "PUT", uri, Some(&content), &key).unwrap();

        // The spec's algorithm: sign_json over {method, uri, origin, destination, content}.
        let mut request = json!({
            "method": "PUT", "uri": uri, "origin": "origin.example",
            "destination": "dest.example", "content": content,
        });
        sign_json(&mut request, &origin, &key).unwrap();
        assert_eq!(
            request["signatures"]["origin.example"]["ed25519:1"],
            json!(unpadded_base64::encode(&auth.signature))
        );

        let parsed = XMatrixAuth::parse(&auth.to_string()).unwrap();
        let vk = key.verify_key();
        assert_eq!(
            verify_request(&parsed, "PUT", uri, &destination, Some(&content), &vk),
            Ok(())
        );
    }

    #[test]
    fn verification_failures() {
        let key = key();
        let vk = key.verify_key();
        let origin = name("origin.example");
        let us = name("dest.example");
        let uri = "/_matrix/federation/v1/query/profile?user_id=%40a%3Ab";
        let auth = sign_request(&origin, &us, "GET", uri, None, &key).unwrap();
        assert_eq!(verify_request(&auth, "GET", uri, &us, None, &vk), Ok(()));

        assert_eq!(
            verify_request(&auth, "GET", uri, &name("other.example"), None, &vk),
            Err(AuthError::WrongDestination {
                expected: "other.example".into(),
                actual: "dest.example".into()
            })
        );
        for (method, target, body) in [
            ("POST", uri, None),
            ("GET", "/_matrix/federation/v1/query/profile", None),
            ("GET", uri, Some(json!({}))),
        ] {
            assert_eq!(
                verify_request(&auth, method, target, &us, body.as_ref(), &vk),
                Err(AuthError::BadSignature),
                "{method} {target}"
            );
        }
        let mut flipped = auth.clone();
        flipped.signature[0] ^= 0x80;
        assert_eq!(
            verify_request(&flipped, "GET", uri, &us, None, &vk),
            Err(AuthError::BadSignature)
        );
        let mut spoofed = auth.clone();
        spoofed.origin = name("evil.example");
        assert_eq!(
            verify_request(&spoofed, "GET", uri, &us, None, &vk),
            Err(AuthError::BadSignature)
        );
        assert!(matches!(
            verify_request(&auth, "GET", uri, &us, Some(&json!({"f": 0.5})), &vk),
            Err(AuthError::Canonical(_))
        ));
        assert!(matches!(
            sign_request(&origin, &us, "PUT", uri, Some(&json!([1.5])), &key),
            Err(AuthError::Canonical(_))
        ));
    }

    /// A pre-1.3 sender signed a destination but did not send it in the header.
    #[test]
    fn missing_destination_verifies_against_our_name() {
        let key = key();
        let us = name("dest.example");
        let mut auth = sign_request(&name("o.example"), &us, "GET", "/x", None, &key).unwrap();
        auth.destination = None;
        let vk = key.verify_key();
        assert_eq!(verify_request(&auth, "GET", "/x", &us, None, &vk), Ok(()));
        assert_eq!(
            verify_request(&auth, "GET", "/x", &name("other.example"), None, &vk),
            Err(AuthError::BadSignature)
        );
    }
}
