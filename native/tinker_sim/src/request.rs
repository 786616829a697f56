//! Validation of request bodies, with errors that name the offending field.

use serde_json::{Map, Value};
use std::fmt;

/// A request body that does not have the expected shape.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldError {
    /// Dotted path of the field, e.g. `sampling_params.max_tokens`; empty for
    /// the body itself.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
    /// 400 when the body is not JSON at all, 422 when a field is wrong.
    pub status: u16,
}

impl FieldError {
    /// A 422 error for `field`.
    pub fn new(field: &str, message: impl Into<String>) -> Self {
        Self {
            field: field.to_string(),
            message: message.into(),
            status: 422,
        }
    }

    /// A 400 error for a body that is not a JSON document.
    pub fn not_json(message: impl Into<String>) -> Self {
        Self {
            field: String::new(),
            message: message.into(),
            status: 400,
        }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "field `{}`: {}", self.field, self.message)
        }
    }
}

impl std::error::Error for FieldError {}

/// Typed accessors over a JSON object that produce [`FieldError`]s.
pub struct Fields<'a> {
    obj: &'a Map<String, Value>,
    prefix: String,
}

impl<'a> Fields<'a> {
    /// Wraps `body`, which must be a JSON object.
    pub fn of(body: Option<&'a Value>) -> Result<Self, FieldError> {
        match body {
            Some(Value::Object(obj)) => Ok(Self {
                obj,
                prefix: String::new(),
            }),
            Some(_) => Err(FieldError::new("", "the body must be a JSON object")),
            None => Err(FieldError::not_json("the body must be a JSON object")),
        }
    }

    /// The full dotted name of `key`.
    pub fn name(&self, key: &str) -> String {
        format!("{}{}", self.prefix, key)
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }

    /// A nested object, required.
    pub fn object(&self, key: &str) -> Result<Fields<'a>, FieldError> {
        match self.get(key) {
            Some(Value::Object(obj)) => Ok(Fields {
                obj,
                prefix: format!("{}.", self.name(key)),
            }),
            Some(_) => Err(FieldError::new(&self.name(key), "must be an object")),
            None => Err(FieldError::new(&self.name(key), "is required")),
        }
    }

    /// An optional nested object.
    pub fn opt_object(&self, key: &str) -> Result<Option<Fields<'a>>, FieldError> {
        match self.get(key) {
            None => Ok(None),
            Some(_) => self.object(key).map(Some),
        }
    }

    /// A required string.
    pub fn string(&self, key: &str) -> Result<&'a str, FieldError> {
        self.opt_string(key)?
            .ok_or_else(|| FieldError::new(&self.name(key), "is required"))
    }

    /// An optional string.
    pub fn opt_string(&self, key: &str) -> Result<Option<&'a str>, FieldError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(FieldError::new(&self.name(key), "must be a string")),
        }
    }

    /// A required integer.
    pub fn int(&self, key: &str) -> Result<i64, FieldError> {
        self.opt_int(key)?
            .ok_or_else(|| FieldError::new(&self.name(key), "is required"))
    }

    /// An optional integer.
    pub fn opt_int(&self, key: &str) -> Result<Option<i64>, FieldError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_i64()
                .map(Some)
                .ok_or_else(|| FieldError::new(&self.name(key), "must be an integer")),
        }
    }

    /// An optional number.
    pub fn opt_f64(&self, key: &str) -> Result<Option<f64>, FieldError> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| FieldError::new(&self.name(key), "must be a number")),
        }
    }

    /// An optional boolean.
    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>, FieldError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(FieldError::new(&self.name(key), "must be a boolean")),
        }
    }

    /// A required array.
    pub fn array(&self, key: &str) -> Result<&'a Vec<Value>, FieldError> {
        match self.get(key) {
            Some(Value::Array(items)) => Ok(items),
            Some(_) => Err(FieldError::new(&self.name(key), "must be an array")),
            None => Err(FieldError::new(&self.name(key), "is required")),
        }
    }

    /// An optional array of strings.
    pub fn opt_strings(&self, key: &str) -> Result<Vec<&'a str>, FieldError> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    v.as_str().ok_or_else(|| {
                        FieldError::new(&format!("{}[{i}]", self.name(key)), "must be a string")
                    })
                })
                .collect(),
            Some(_) => Err(FieldError::new(&self.name(key), "must be an array")),
        }
    }
}
