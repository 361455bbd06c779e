//! A JSON object read member by member, each value left as the text it arrived as: for relays that
//! rewrite a few top-level members of an upstream's answer and pass the rest through byte for byte,
//! without building (and then serialising again) a tree of every string and number in it.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// The members of a JSON object, in order, each value as its JSON text; keys borrowed where they had no
/// escapes.
#[derive(Debug)]
pub struct RawObject<'a> {
    pub members: Vec<(Cow<'a, str>, &'a str)>,
}

#[derive(Deserialize)]
struct Key<'a>(#[serde(borrow)] Cow<'a, str>);

impl<'a> RawObject<'a> {
    /// Reads an object (and checks that every member's value is well-formed JSON).
    pub fn parse(bytes: &'a [u8]) -> serde_json::Result<RawObject<'a>> {
        serde_json::from_slice(bytes)
    }

    /// [`RawObject::parse`] for text already known to be UTF-8 (its values are not checked again).
    pub fn parse_str(text: &'a str) -> serde_json::Result<RawObject<'a>> {
        serde_json::from_str(text)
    }

    /// A member's value as JSON text (the last one, if the key repeats, as a parser into a map would
    /// keep).
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.members.iter().rev().find(|(k, _)| k == key).map(|(_, v)| *v)
    }

    /// A member that is a string, unescaped.
    pub fn get_str(&self, key: &str) -> Option<Cow<'a, str>> {
        let raw = self.get(key)?;
        serde_json::from_str::<Key<'a>>(raw).ok().map(|k| k.0)
    }

    /// Whether a member is an array.
    pub fn is_array(&self, key: &str) -> bool {
        self.get(key).is_some_and(|v| v.starts_with('['))
    }

    /// Writes the object to `out` with the members in `set` given new values (raw JSON), in place
    /// where the object had them and at the end where it did not, and without the members `drop`
    /// names. Every other member is copied as it came. A key that repeats is written once. The keys in
    /// `set` are written as given: plain names, with nothing JSON would escape.
    pub fn write_with(&self, out: &mut Vec<u8>, set: &[(&str, &[u8])], drop: impl Fn(&str) -> bool) {
        debug_assert!(set.len() <= 32);
        let mut written = 0u32;
        let mut first = true;
        let mut member = |out: &mut Vec<u8>, key: &Cow<str>, value: &[u8]| {
            if !first {
                out.push(b',');
            }
            first = false;
            match key {
                // A key that had no escapes has nothing to escape (JSON strings hold no raw control
                // characters): written as it came.
                Cow::Borrowed(k) => {
                    out.push(b'"');
                    out.extend_from_slice(k.as_bytes());
                    out.push(b'"');
                }
                // A key is a string: serialising it cannot fail.
                Cow::Owned(k) => {
                    let _ = serde_json::to_writer(&mut *out, k);
                }
            }
            out.push(b':');
            out.extend_from_slice(value);
        };
        out.push(b'{');
        for (k, v) in &self.members {
            match set.iter().position(|(s, _)| *s == k.as_ref()) {
                Some(i) => {
                    if written & (1 << i) == 0 {
                        member(out, k, set[i].1);
                        written |= 1 << i;
                    }
                }
                None if drop(k) => {}
                None => member(out, k, v.as_bytes()),
            }
        }
        for (i, (k, v)) in set.iter().enumerate() {
            if written & (1 << i) == 0 {
                member(out, &Cow::Borrowed(k), v);
            }
        }
        out.push(b'}');
    }
}

/// A JSON object read once and kept: its text, and where each member lies in it. A reader that checks an
/// answer when it arrives (to try the next upstream if it is not JSON) and rewrites it later views its
/// members with [`ParsedObject::view`], without a second parse.
#[derive(Debug, Clone)]
pub struct ParsedObject {
    text: String,
    members: Vec<(KeySpan, Range<usize>)>,
}

#[derive(Debug, Clone)]
enum KeySpan {
    /// A key without escapes, as it lies in the text.
    At(Range<usize>),
    /// A key with escapes, unescaped (rare).
    Owned(String),
}

impl ParsedObject {
    /// Checks that `bytes` are one JSON object (UTF-8 included) and records its members.
    pub fn parse(bytes: impl Into<Vec<u8>>) -> Result<ParsedObject, ParseError> {
        let text = String::from_utf8(bytes.into()).map_err(|_| ParseError)?;
        let base = text.as_ptr() as usize;
        // Where a slice of `text` lies in it.
        let span = |s: &str| {
            let start = s.as_ptr() as usize - base;
            start..start + s.len()
        };
        let members = {
            let obj = RawObject::parse_str(&text).map_err(|_| ParseError)?;
            obj.members
                .into_iter()
                .map(|(k, v)| {
                    let key = match k {
                        Cow::Borrowed(k) => KeySpan::At(span(k)),
                        Cow::Owned(k) => KeySpan::Owned(k),
                    };
                    (key, span(v))
                })
                .collect()
        };
        Ok(ParsedObject { text, members })
    }

    /// The object's text, as it came.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Its members, as [`RawObject::parse_str`] would give them.
    pub fn view(&self) -> RawObject<'_> {
        let t = self.text.as_str();
        RawObject {
            members: self
                .members
                .iter()
                .map(|(k, v)| {
                    let key = match k {
                        KeySpan::At(r) => Cow::Borrowed(&t[r.clone()]),
                        KeySpan::Owned(k) => Cow::Borrowed(k.as_str()),
                    };
                    (key, &t[v.clone()])
                })
                .collect(),
        }
    }
}

/// Text that is not one JSON object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseError;

/// Finds whether JSON text may hold a member `key` whose value is not `null`, by a byte search rather
/// than a parse: for readers that need a full parse only in the rare event that carries such a member
/// (an `error`, a `finish_reason`). A `false` is certain for keys written without escapes; a `true` can
/// be a false alarm (the same key deeper in the object, or inside a string), which costs only the
/// parse it asks for. Build one per key and keep it: building the searcher costs more than a search.
pub struct KeyProbe {
    finder: memchr::memmem::Finder<'static>,
    len: usize,
}

impl KeyProbe {
    pub fn new(key: &'static str) -> KeyProbe {
        KeyProbe {
            finder: memchr::memmem::Finder::new(key.as_bytes()),
            len: key.len(),
        }
    }

    pub fn may_hold_non_null(&self, text: &str) -> bool {
        let b = text.as_bytes();
        self.finder.find_iter(b).any(|at| {
            let end = at + self.len;
            // The key as a whole string: quoted on both sides.
            if at == 0 || b[at - 1] != b'"' || b.get(end) != Some(&b'"') {
                return false;
            }
            match b[end + 1..].trim_ascii_start().strip_prefix(b":") {
                Some(value) => !value.trim_ascii_start().starts_with(b"null"),
                // Not followed by a colon: a string value, not a key.
                None => false,
            }
        })
    }
}

impl<'de> Deserialize<'de> for RawObject<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawObject<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut members = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some(Key(k)) = map.next_key::<Key<'de>>()? {
                    let v: &'de RawValue = map.next_value()?;
                    members.push((k, v.get()));
                }
                Ok(RawObject { members })
            }
        }
        d.deserialize_map(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_keep_their_text_and_order() {
        let body = br#"{"id":"c1","model":"m","choices":[{"index":0}],"usage":{"prompt_tokens":3},"k\"q":1}"#;
        let o = RawObject::parse(body).unwrap();
        let s = RawObject::parse_str(std::str::from_utf8(body).unwrap()).unwrap();
        assert_eq!(format!("{:?}", o.members), format!("{:?}", s.members));
        let keys: Vec<&str> = o.members.iter().map(|(k, _)| k.as_ref()).collect();
        assert_eq!(keys, ["id", "model", "choices", "usage", "k\"q"]);
        assert!(matches!(o.members[0].0, Cow::Borrowed(_)));
        assert_eq!(o.get("choices").unwrap(), r#"[{"index":0}]"#);
        assert!(o.is_array("choices") && !o.is_array("usage"));
        assert_eq!(o.get_str("id").as_deref(), Some("c1"));
        assert_eq!(o.get_str("usage"), None);
    }

    #[test]
    fn a_parsed_object_views_the_members_a_parse_gives() {
        let body =
            br#" {"id":"c1", "k\"q" : [1, {"a":"\u00e9"}], "model":"m","usage":{"p":3}, "e":"\u00e9t\u00e9"}
"#;
        let p = ParsedObject::parse(body.to_vec()).unwrap();
        let direct = RawObject::parse(body).unwrap();
        assert_eq!(format!("{:?}", p.view().members), format!("{:?}", direct.members));
        assert_eq!(p.view().get_str("e").as_deref(), Some("\u{e9}t\u{e9}"));
        assert_eq!(p.text().as_bytes(), body);
        assert!(p.clone().view().is_array("k\"q"));
        for bad in [&b"[1]"[..], b"{\"a\":}", b"", b"{\"a\":\"\xff\"}"] {
            assert_eq!(ParsedObject::parse(bad.to_vec()).unwrap_err(), ParseError);
        }
    }

    #[test]
    fn written_with_members_set_and_dropped() {
        let o =
            RawObject::parse(br#"{"id":"", "model":"up", "x":[1, 2], "usage":{"a":1}, "k\"q":2}"#).unwrap();
        let mut out = Vec::new();
        o.write_with(&mut out, &[("model", b"\"pub\""), ("created", b"7")], |k| {
            k == "usage"
        });
        assert_eq!(
            std::str::from_utf8(&out).unwrap(),
            r#"{"id":"","model":"pub","x":[1, 2],"k\"q":2,"created":7}"#
        );
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["k\"q"], 2);
        // A key that repeats is written once, with the new value.
        let o = RawObject::parse(br#"{"model":"a","model":"b"}"#).unwrap();
        out.clear();
        o.write_with(&mut out, &[("model", b"\"m\"")], |_| false);
        assert_eq!(out, br#"{"model":"m"}"#);
        // An empty object gets the members set, and nothing else.
        let o = RawObject::parse(b"{}").unwrap();
        out.clear();
        o.write_with(&mut out, &[("id", b"\"x\"")], |_| true);
        assert_eq!(out, br#"{"id":"x"}"#);
    }

    #[test]
    fn a_non_null_member_is_found_by_its_bytes() {
        let (finish, error) = (KeyProbe::new("finish_reason"), KeyProbe::new("error"));
        let may_hold_non_null = |text: &str, key: &str| match key {
            "error" => error.may_hold_non_null(text),
            _ => finish.may_hold_non_null(text),
        };
        let chunk = r#"{"id":"c","choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":null}]}"#;
        assert!(!may_hold_non_null(chunk, "finish_reason"));
        assert!(!may_hold_non_null(chunk, "error"));
        let spaced = r#"{"choices": [{"finish_reason" :  null}], "error": null}"#;
        assert!(!may_hold_non_null(spaced, "finish_reason"));
        assert!(!may_hold_non_null(spaced, "error"));
        assert!(may_hold_non_null(
            r#"{"choices":[{"finish_reason":"stop"}]}"#,
            "finish_reason"
        ));
        assert!(may_hold_non_null(
            r#"{"choices":[{"finish_reason" : "length"}]}"#,
            "finish_reason"
        ));
        assert!(may_hold_non_null(r#"{"error":{"message":"boom"}}"#, "error"));
        // The word as a value, or inside a longer key, is not the member.
        assert!(!may_hold_non_null(
            r#"{"type":"error","delta":{"content":"an error"}}"#,
            "error"
        ));
        assert!(!may_hold_non_null(
            r#"{"last_error":{"m":1},"errors":[1]}"#,
            "error"
        ));
        // Every object whose parse finds the member non-null is caught.
        for text in [
            r#"{"a":1,"error":{"message":"x"}}"#,
            r#"{"error":"text"}"#,
            r#"{"error":0}"#,
            "{\"choices\":[{\"finish_reason\":\n\"stop\"}]}",
        ] {
            let key = if text.contains("choices") {
                "finish_reason"
            } else {
                "error"
            };
            assert!(may_hold_non_null(text, key), "{text}");
        }
    }

    #[test]
    fn what_is_not_an_object_is_refused() {
        for bad in [&b"[1]"[..], b"\"s\"", b"{\"a\":}", b"{\"a\":1", b"", b"null"] {
            assert!(RawObject::parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        // Whitespace around the value, as upstreams send it, is fine.
        assert_eq!(
            RawObject::parse(b" {\"a\": [1, 2] }\n")
                .unwrap()
                .get("a")
                .unwrap(),
            "[1, 2]"
        );
    }
}
