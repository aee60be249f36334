//! Nested request objects must be JSON objects. A derived `Deserialize` of a struct also takes
//! the struct's fields as an array (`{"rate_limits": [null, null]}` set both limits), which
//! clients never mean and the API description does not allow; these helpers, for
//! `#[serde(deserialize_with = "…")]`, refuse anything but an object and keep the field paths
//! of errors inside it (`rate_limits.items_per_minute`).

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, de::Visitor, forward_to_deserialize_any};

/// A deserializer that reads a struct only from a map.
struct MapOnly<D>(D);

impl<'de, D: Deserializer<'de>> Deserializer<'de> for MapOnly<D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.0.deserialize_any(visitor)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.0.deserialize_map(visitor)
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

/// `T`, read only from a JSON object.
pub struct Object<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Object<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        T::deserialize(MapOnly(d)).map(Object)
    }
}

/// A struct field: an object.
pub fn object<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    Object::<T>::deserialize(d).map(|o| o.0)
}

/// An optional struct field: an object or `null`.
pub fn optional_object<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    Option::<Object<T>>::deserialize(d).map(|o| o.map(|o| o.0))
}

/// An optional list of objects.
pub fn optional_objects<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Vec<T>>, D::Error> {
    Option::<Vec<Object<T>>>::deserialize(d)
        .map(|o| o.map(|list| list.into_iter().map(|o| o.0).collect()))
}

/// A map whose values are objects.
pub fn object_values<'de, D: Deserializer<'de>, K: Ord + Deserialize<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<BTreeMap<K, T>, D::Error> {
    BTreeMap::<K, Object<T>>::deserialize(d).map(|m| m.into_iter().map(|(k, v)| (k, v.0)).collect())
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        a: Option<i64>,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        #[serde(default, deserialize_with = "super::optional_object")]
        inner: Option<Inner>,
        #[serde(default, deserialize_with = "super::optional_objects")]
        list: Option<Vec<Inner>>,
    }

    #[test]
    fn objects_are_read_and_arrays_refused() {
        let ok: Outer =
            serde_json::from_str(r#"{"inner": {"a": 1}, "list": [{"a": null}]}"#).expect("objects");
        assert_eq!(ok.inner, Some(Inner { a: Some(1) }));
        let none: Outer = serde_json::from_str(r#"{"inner": null}"#).expect("null");
        assert_eq!(none.inner, None);
        for bad in [r#"{"inner": [1]}"#, r#"{"list": [[1]]}"#, r#"{"inner": 3}"#] {
            let error = serde_json::from_str::<Outer>(bad)
                .expect_err(bad)
                .to_string();
            assert!(error.contains("expected struct Inner"), "{bad}: {error}");
        }
        // Errors inside keep their place.
        let mut de = serde_json::Deserializer::from_str(r#"{"inner": {"a": "x"}}"#);
        let error = serde_path_to_error::deserialize::<_, Outer>(&mut de).expect_err("type");
        assert_eq!(error.path().to_string(), "inner.a");
    }
}
