//! Matrix canonical JSON (Matrix specification, Appendices, "Signing JSON" → "Canonical JSON"):
//! the one byte encoding of a JSON value that every signature and hash in federation covers.
//!
//! This module owns that encoding and nothing else. The rules, from the appendix and its grammar:
//!
//! * object keys sorted lexicographically by Unicode code point;
//! * no insignificant whitespace;
//! * strings in UTF-8, escaping only what JSON requires: `"` → `\"`, `\` → `\\`, the five
//!   control characters with short forms (`\b` `\f` `\n` `\r` `\t`), and every other character
//!   in U+0000–U+001F as `\u00XX` with lower-case hex digits (the grammar lists `u000b`,
//!   `u001f`, …). Everything else, `/`, U+007F and U+2028 included, is written as is;
//! * numbers are integers in `[-(2^53)+1, (2^53)-1]`, without exponent, fraction or `-0`.
//!
//! A number that arrived in float syntax but denotes such an integer (`1e10`, `-0`) is written
//! as that integer, because the appendix's own example requires it
//! (`{"a": -0, "b": 1e10}` → `{"a":0,"b":10000000000}`); any other float and any integer out of
//! range is refused with [`CanonicalJsonError`], never silently rounded.
//!
//! Nesting is limited to [`MAX_DEPTH`] levels so that a hostile value cannot overflow the stack.

use serde_json::{Map, Value};

/// The deepest nesting of arrays and objects accepted, counting the outermost container as 1.
///
/// It is just above what `serde_json`'s parser accepts (127 levels), so anything that parsed off
/// the wire can be canonicalized (and its signature checked), while values built in memory cannot
/// recurse without bound.
pub const MAX_DEPTH: usize = 128;

/// The largest integer canonical JSON allows, `(2^53)-1`; the smallest is its negation.
pub const MAX_SAFE_INTEGER: i64 = (1 << 53) - 1;

/// Why a value has no canonical JSON form.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CanonicalJsonError {
    /// A number with a fractional part, or a non-finite one: canonical JSON has no floats.
    #[error("floats are not allowed in canonical JSON (got {0})")]
    Float(f64),
    /// An integer outside `[-(2^53)+1, (2^53)-1]` (shown as the text serde_json holds).
    #[error("integer {0} is outside the canonical JSON range ±(2^53-1)")]
    IntegerOutOfRange(String),
    /// Arrays and objects nested deeper than [`MAX_DEPTH`].
    #[error("JSON nested deeper than {MAX_DEPTH} levels")]
    TooDeep,
}

/// Encodes `value` as Matrix canonical JSON.
pub fn to_canonical_string(value: &Value) -> Result<String, CanonicalJsonError> {
    let mut out = String::new();
    write_value(&mut out, value, 0)?;
    Ok(out)
}

/// Encodes a JSON object as canonical JSON, leaving out the named top-level members.
///
/// Signing and hashing always cover an object minus a few members (`signatures` and
/// `unsigned` for "Signing Details"; `hashes` too for event content hashes); skipping them
/// while writing spares a deep copy of a possibly large object.
pub fn object_to_canonical_string_without(
    object: &Map<String, Value>,
    skipped_keys: &[&str],
) -> Result<String, CanonicalJsonError> {
    let mut out = String::new();
    write_object(&mut out, object, skipped_keys, 1)?;
    Ok(out)
}

fn write_value(out: &mut String, value: &Value, depth: usize) -> Result<(), CanonicalJsonError> {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => write_number(out, n)?,
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            let depth = enter(depth)?;
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item, depth)?;
            }
            out.push(']');
        }
        Value::Object(object) => write_object(out, object, &[], enter(depth)?)?,
    }
    Ok(())
}

/// Counts one more level of nesting, refusing to go past [`MAX_DEPTH`].
fn enter(depth: usize) -> Result<usize, CanonicalJsonError> {
    let depth = depth.saturating_add(1);
    if depth > MAX_DEPTH {
        return Err(CanonicalJsonError::TooDeep);
    }
    Ok(depth)
}

fn write_object(
    out: &mut String,
    object: &Map<String, Value>,
    skipped_keys: &[&str],
    depth: usize,
) -> Result<(), CanonicalJsonError> {
    // serde_json's map is a BTreeMap today, already in byte order, which for UTF-8 is code point
    // order. Sorting again is cheap insurance: if any crate in the workspace ever turns on
    // serde_json's `preserve_order` feature, feature unification would silently switch the map
    // to insertion order and every signature would break.
    let mut entries: Vec<(&String, &Value)> = object
        .iter()
        .filter(|(key, _)| !skipped_keys.contains(&key.as_str()))
        .collect();
    entries.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    out.push('{');
    for (i, (key, value)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_string(out, key);
        out.push(':');
        write_value(out, value, depth)?;
    }
    out.push('}');
    Ok(())
}

fn write_number(out: &mut String, n: &serde_json::Number) -> Result<(), CanonicalJsonError> {
    let in_range = |i: i64| (-MAX_SAFE_INTEGER..=MAX_SAFE_INTEGER).contains(&i);
    if let Some(i) = n.as_i64() {
        if !in_range(i) {
            return Err(CanonicalJsonError::IntegerOutOfRange(n.to_string()));
        }
        out.push_str(&i.to_string());
    } else if n.is_u64() {
        // Only integers above i64::MAX get here, all of them out of range.
        return Err(CanonicalJsonError::IntegerOutOfRange(n.to_string()));
    } else {
        let f = n.as_f64().unwrap_or(f64::NAN);
        // Float syntax for a whole number (`1e10`, `-0`) is the same number as the integer, and
        // the appendix's example canonicalizes it so; anything with a fraction is a real float.
        if !f.is_finite() || f.fract() != 0.0 {
            return Err(CanonicalJsonError::Float(f));
        }
        if f.abs() > MAX_SAFE_INTEGER as f64 {
            return Err(CanonicalJsonError::IntegerOutOfRange(n.to_string()));
        }
        // Exact: |f| < 2^53 and has no fraction; -0.0 becomes the integer 0, which has no sign.
        out.push_str(&(f as i64).to_string());
    }
    Ok(())
}

fn write_string(out: &mut String, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0C}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{00}'..='\u{1F}' => {
                let b = c as usize;
                out.push_str("\\u00");
                out.push(char::from(HEX[(b >> 4) & 0xF]));
                out.push(char::from(HEX[b & 0xF]));
            }
            _ => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn canon(input: &str) -> String {
        to_canonical_string(&serde_json::from_str(input).unwrap()).unwrap()
    }

    /// Every example under "Canonical JSON" → "Examples" in the appendix, input text as given.
    #[test]
    fn appendix_examples() {
        let cases = [
            ("{}", "{}"),
            (
                r#"{
                    "one": 1,
                    "two": "Two"
                }"#,
                r#"{"one":1,"two":"Two"}"#,
            ),
            (
                r#"{
                    "b": "2",
                    "a": "1"
                }"#,
                r#"{"a":"1","b":"2"}"#,
            ),
            (r#"{"b":"2","a":"1"}"#, r#"{"a":"1","b":"2"}"#),
            (
                r#"{
                    "auth": {
                        "success": true,
                        "mxid": "@john.doe:example.com",
                        "profile": {
                            "display_name": "John Doe",
                            "three_pids": [
                                {
                                    "medium": "email",
                                    "address": "john.doe@example.org"
                                },
                                {
                                    "medium": "msisdn",
                                    "address": "123456789"
                                }
                            ]
                        }
                    }
                }"#,
                r#"{"auth":{"mxid":"@john.doe:example.com","profile":{"display_name":"John Doe","three_pids":[{"address":"john.doe@example.org","medium":"email"},{"address":"123456789","medium":"msisdn"}]},"success":true}}"#,
            ),
            (r#"{"a": "日本語"}"#, r#"{"a":"日本語"}"#),
            (r#"{"本": 2, "日": 1}"#, r#"{"日":1,"本":2}"#),
            (r#"{"a": "\u65E5"}"#, r#"{"a":"日"}"#),
            (r#"{"a": null}"#, r#"{"a":null}"#),
            (r#"{"a": -0, "b": 1e10}"#, r#"{"a":0,"b":10000000000}"#),
        ];
        for (input, expected) in cases {
            assert_eq!(canon(input), expected, "input: {input}");
        }
    }

    #[test]
    fn escapes_exactly_what_the_grammar_requires() {
        let all_controls: String = (0u8..0x20).map(char::from).collect();
        let got = to_canonical_string(&Value::String(all_controls)).unwrap();
        let expected = concat!(
            r#"""#,
            r"\u0000\u0001\u0002\u0003\u0004\u0005\u0006\u0007",
            r"\b\t\n\u000b\f\r\u000e\u000f",
            r"\u0010\u0011\u0012\u0013\u0014\u0015\u0016\u0017",
            r"\u0018\u0019\u001a\u001b\u001c\u001d\u001e\u001f",
            r#"""#
        );
        assert_eq!(got, expected);
        // Quote and backslash are escaped; solidus, DEL, non-ASCII and astral characters are not.
        let got = to_canonical_string(&json!("\"\\/\u{7f}\u{2028}é😀")).unwrap();
        assert_eq!(got, "\"\\\"\\\\/\u{7f}\u{2028}é😀\"");
    }

    #[test]
    fn escaped_keys_and_nested_sorting() {
        let v = json!({"b\n": {"z": [3, {"y": 1, "x": 2}], "a": []}, "a\"": {}});
        assert_eq!(
            to_canonical_string(&v).unwrap(),
            r#"{"a\"":{},"b\n":{"a":[],"z":[3,{"x":2,"y":1}]}}"#
        );
    }

    /// UTF-8 byte order is code point order; UTF-16 order would differ on this pair
    /// (U+FF61 sorts before U+1F600 in UTF-16 because of the surrogate range).
    #[test]
    fn keys_sort_by_code_point_not_utf16() {
        let v = json!({"😀": 1, "｡": 2, "z": 3, "é": 4});
        assert_eq!(
            to_canonical_string(&v).unwrap(),
            r#"{"z":3,"é":4,"｡":2,"😀":1}"#
        );
    }

    #[test]
    fn integer_bounds() {
        assert_eq!(canon("9007199254740991"), "9007199254740991");
        assert_eq!(canon("-9007199254740991"), "-9007199254740991");
        for bad in [
            "9007199254740992",
            "-9007199254740992",
            "18446744073709551615",
            "1e300",
            "9007199254740992.0",
        ] {
            let v: Value = serde_json::from_str(bad).unwrap();
            assert!(
                matches!(
                    to_canonical_string(&v),
                    Err(CanonicalJsonError::IntegerOutOfRange(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn floats_are_refused() {
        for bad in ["1.5", "-0.25", "1e-3"] {
            let v: Value = serde_json::from_str(bad).unwrap();
            assert!(
                matches!(to_canonical_string(&v), Err(CanonicalJsonError::Float(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            to_canonical_string(&json!({"a": [0.5]})),
            Err(CanonicalJsonError::Float(_))
        ));
    }

    /// `depth` arrays nested in each other, the innermost empty.
    fn nested_arrays(depth: usize) -> Value {
        let mut v = Value::Array(vec![]);
        for _ in 1..depth {
            v = Value::Array(vec![v]);
        }
        v
    }

    #[test]
    fn depth_limit_covers_serde_json_parser() {
        // The deepest text serde_json parses canonicalizes, and so does one more level.
        let text = |depth| format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        assert!(serde_json::from_str::<Value>(&text(MAX_DEPTH)).is_err());
        let parsed: Value = serde_json::from_str(&text(MAX_DEPTH - 1)).unwrap();
        assert_eq!(to_canonical_string(&parsed).unwrap(), text(MAX_DEPTH - 1));
        assert_eq!(
            to_canonical_string(&nested_arrays(MAX_DEPTH)).unwrap(),
            text(MAX_DEPTH)
        );
        assert_eq!(
            to_canonical_string(&nested_arrays(MAX_DEPTH + 1)),
            Err(CanonicalJsonError::TooDeep)
        );
        // Built in memory far deeper than any parser allows: refused, not a stack overflow.
        assert_eq!(
            to_canonical_string(&nested_arrays(1_000)),
            Err(CanonicalJsonError::TooDeep)
        );
        let mut deep_object = json!({});
        for _ in 0..MAX_DEPTH {
            deep_object = json!({ "k": deep_object });
        }
        assert_eq!(
            to_canonical_string(&deep_object),
            Err(CanonicalJsonError::TooDeep)
        );
    }

    #[test]
    fn skipping_top_level_members_only() {
        let v = json!({"b": 1, "signatures": {"x": 1}, "unsigned": {}, "a": {"signatures": 2}});
        let object = v.as_object().unwrap();
        assert_eq!(
            object_to_canonical_string_without(object, &["signatures", "unsigned"]).unwrap(),
            r#"{"a":{"signatures":2},"b":1}"#
        );
    }

    /// Our escaping agrees with serde_json's compact writer, which also escapes only what
    /// RFC 8259 requires, using lower-case hex.
    #[test]
    fn strings_agree_with_serde_json_compact_output() {
        let samples: Vec<String> = (0u32..0x300)
            .filter_map(char::from_u32)
            .map(|c| format!("a{c}b"))
            .collect();
        for s in samples {
            let v = Value::String(s);
            assert_eq!(
                to_canonical_string(&v).unwrap(),
                serde_json::to_string(&v).unwrap()
            );
        }
    }
}
