//! `--json`: the server's answer, pretty-printed as it came (key order and numbers untouched,
//! which a round trip through `serde_json::Value` would not keep).

/// Re-indents a JSON document with two spaces per level; `None` if `body` is not JSON.
pub fn pretty(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<serde::de::IgnoredAny>(body).ok()?;
    let text = std::str::from_utf8(body).ok()?;
    Some(reindent(text))
}

/// Re-indents `text`, which must be valid JSON.
fn reindent(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 2);
    let mut depth = 0usize;
    let mut chars = text.chars().peekable();
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        out.push_str(&"  ".repeat(depth));
    };
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                out.push(c);
                let mut escaped = false;
                for c in chars.by_ref() {
                    out.push(c);
                    match (escaped, c) {
                        (false, '\\') => escaped = true,
                        (false, '"') => break,
                        _ => escaped = false,
                    }
                }
            }
            '{' | '[' => {
                while chars.next_if(|c| c.is_whitespace()).is_some() {}
                let close = if c == '{' { '}' } else { ']' };
                if chars.next_if_eq(&close).is_some() {
                    out.push(c);
                    out.push(close);
                } else {
                    out.push(c);
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(',');
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c if c.is_whitespace() => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_key_order_and_numbers() {
        let got = pretty(br#"{"z":1,"a":[1.50,{"b":null}],"e":{},"f":[ ]}"#).unwrap();
        assert_eq!(
            got,
            "{\n  \"z\": 1,\n  \"a\": [\n    1.50,\n    {\n      \"b\": null\n    }\n  ],\n  \"e\": {},\n  \"f\": []\n}"
        );
    }

    #[test]
    fn leaves_strings_alone() {
        let got = pretty(br#"{"k, {x}": "a \"q\" [b]: c\\", "u":"\u00e9 ok"}"#).unwrap();
        assert_eq!(
            got,
            "{\n  \"k, {x}\": \"a \\\"q\\\" [b]: c\\\\\",\n  \"u\": \"\\u00e9 ok\"\n}"
        );
    }

    #[test]
    fn matches_serde_json_on_ordered_input() {
        let body = br#" { "a" : [ 1 , 2 ] , "b" : { "c" : true } , "d" : "x y" } "#;
        let value: serde_json::Value = serde_json::from_slice(body).unwrap();
        assert_eq!(
            pretty(body).unwrap(),
            serde_json::to_string_pretty(&value).unwrap()
        );
    }

    #[test]
    fn refuses_what_is_not_json() {
        assert!(pretty(b"<html>").is_none());
        assert!(pretty(b"").is_none());
        assert!(pretty(b"{\"a\": 1").is_none());
    }
}
