//! Small JSON helpers shared by input validation.

use serde_json::Value;

/// What kind of JSON value this is, for error messages ("must be a string, got a number").
pub fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_each_kind() {
        let kinds: Vec<&str> =
            [json!(null), json!(true), json!(1), json!("s"), json!([]), json!({})].iter().map(kind).collect();
        assert_eq!(kinds, ["null", "a boolean", "a number", "a string", "an array", "an object"]);
    }
}
