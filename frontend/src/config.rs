//! Configuration values and their command-line overrides (`--set d=128`).
//!
//! A config entry's type is the type of its default (int, float or bool). An
//! override must fit that type (an int is accepted where a float is expected).
//! Entries are evaluated in order, so derived entries such as
//! `head_dim = d / heads` follow an override of `d`, unless they are
//! overridden themselves.

use crate::value::Value;

/// One `--set key=value`, as typed by the user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Override {
    pub key: String,
    pub value: String,
}

impl Override {
    /// Parses `key=value`.
    pub fn parse(text: &str) -> Result<Override, String> {
        let (key, value) = text
            .split_once('=')
            .ok_or_else(|| format!("`--set {text}`: expected KEY=VALUE, for example `--set layers=2`"))?;
        let (key, value) = (key.trim(), value.trim());
        if key.is_empty() || value.is_empty() {
            return Err(format!("`--set {text}`: expected KEY=VALUE, for example `--set layers=2`"));
        }
        Ok(Override { key: key.to_string(), value: value.to_string() })
    }
}

/// The resolved configuration of a model, in declaration order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Config {
    pub entries: Vec<ConfigValue>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ConfigValue {
    pub name: String,
    pub value: Value,
    pub doc: Option<String>,
    /// True when `--set` gave this value.
    pub overridden: bool,
}

impl Config {
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.entries.iter().find(|e| e.name == name).map(|e| &e.value)
    }

    pub fn get_int(&self, name: &str) -> Option<i64> {
        match self.get(name) {
            Some(Value::Int(i)) => Some(*i),
            _ => None,
        }
    }
}

/// Converts an override's text to a value of the same type as `default`.
pub fn parse_override(key: &str, text: &str, default: &Value) -> Result<Value, String> {
    let bad = |what: &str| format!("`--set {key}={text}`: `{key}` is {what}, and `{text}` is not");
    match default {
        Value::Int(_) => text.replace('_', "").parse::<i64>().map(Value::Int).map_err(|_| bad("an integer")),
        Value::Float(_) => match text.replace('_', "").parse::<f64>() {
            Ok(x) if x.is_finite() => Ok(Value::Float(x)),
            _ => Err(bad("a finite number")),
        },
        Value::Bool(_) => match text {
            "true" => Ok(Value::Bool(true)),
            "false" => Ok(Value::Bool(false)),
            _ => Err(bad("`true` or `false`")),
        },
        other => Err(format!("`{key}` holds {} and cannot be set from the command line", other.describe())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_key_value() {
        assert_eq!(Override::parse("d=128").unwrap(), Override { key: "d".into(), value: "128".into() });
        assert!(Override::parse("d").is_err());
        assert!(Override::parse("=3").is_err());
    }

    #[test]
    fn override_types_follow_defaults() {
        assert_eq!(parse_override("d", "128", &Value::Int(256)).unwrap(), Value::Int(128));
        assert!(parse_override("d", "1.5", &Value::Int(256)).unwrap_err().contains("integer"));
        assert_eq!(parse_override("p", "0", &Value::Float(0.1)).unwrap(), Value::Float(0.0));
        assert!(parse_override("p", "nan", &Value::Float(0.1)).is_err());
        assert_eq!(parse_override("b", "false", &Value::Bool(true)).unwrap(), Value::Bool(false));
        assert!(parse_override("b", "1", &Value::Bool(true)).is_err());
    }
}
