//! A JSON object read member by member, each value left as the text it arrived as: for relays that
//! rewrite a few top-level members of an upstream's answer and pass the rest through byte for byte,
//! without building (and then serialising again) a tree of every string and number in it.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// The members of a JSON object, in order; keys borrowed where they had no escapes.
#[derive(Debug)]
pub struct RawObject<'a> {
    pub members: Vec<(Cow<'a, str>, &'a RawValue)>,
}

#[derive(Deserialize)]
struct Key<'a>(#[serde(borrow)] Cow<'a, str>);

impl<'a> RawObject<'a> {
    /// Reads an object (and checks that every member's value is well-formed JSON).
    pub fn parse(bytes: &'a [u8]) -> serde_json::Result<RawObject<'a>> {
        serde_json::from_slice(bytes)
    }

    /// A member's raw value (the last one, if the key repeats, as a parser into a map would keep).
    pub fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.members.iter().rev().find(|(k, _)| k == key).map(|(_, v)| *v)
    }

    /// A member that is a string, unescaped.
    pub fn get_str(&self, key: &str) -> Option<Cow<'a, str>> {
        let raw = self.get(key)?;
        serde_json::from_str::<Key<'a>>(raw.get()).ok().map(|k| k.0)
    }

    /// Whether a member is an array.
    pub fn is_array(&self, key: &str) -> bool {
        self.get(key).is_some_and(|v| v.get().starts_with('['))
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
                    members.push((k, v));
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
        let keys: Vec<&str> = o.members.iter().map(|(k, _)| k.as_ref()).collect();
        assert_eq!(keys, ["id", "model", "choices", "usage", "k\"q"]);
        assert!(matches!(o.members[0].0, Cow::Borrowed(_)));
        assert_eq!(o.get("choices").unwrap().get(), r#"[{"index":0}]"#);
        assert!(o.is_array("choices") && !o.is_array("usage"));
        assert_eq!(o.get_str("id").as_deref(), Some("c1"));
        assert_eq!(o.get_str("usage"), None);
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
                .unwrap()
                .get(),
            "[1, 2]"
        );
    }
}
