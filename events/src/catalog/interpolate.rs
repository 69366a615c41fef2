//! Compose-style interpolation of one string scalar: `$VAR`, `${VAR}`, `${VAR:-default}`,
//! `${VAR-default}`, `${VAR:?message}`, `${VAR?message}`, `${VAR:+alt}`, `${VAR+alt}` and `$$`.
//!
//! One interpolator serves both uses: at deployment every variable is either set or unset;
//! at catalog load values arrive later, so a variable without a declared default is
//! *unknown* and the scalar that uses it is deferred (not validated) instead of failing.

use std::collections::{BTreeMap, BTreeSet};

enum Var<'a> {
    Set(&'a str),
    Unset,
    /// Catalog load: the value comes with the deployment request.
    Unknown,
}

pub(crate) struct Interpolator<'a> {
    values: &'a BTreeMap<String, String>,
    /// Absent variables are unknown (catalog load) rather than unset (deployment).
    checking: bool,
    /// Variables used without a value and without a default, all of them.
    pub missing: BTreeSet<String>,
    /// `${VAR?message}` failures, in document order.
    pub required: Vec<(String, String)>,
}

impl<'a> Interpolator<'a> {
    /// Deployment: `values` is every variable there is.
    pub fn resolving(values: &'a BTreeMap<String, String>) -> Self {
        Self {
            values,
            checking: false,
            missing: BTreeSet::new(),
            required: Vec::new(),
        }
    }

    /// Catalog load: `defaults` are the declared defaults; other variables are unknown.
    pub fn checking(defaults: &'a BTreeMap<String, String>) -> Self {
        Self {
            values: defaults,
            checking: true,
            missing: BTreeSet::new(),
            required: Vec::new(),
        }
    }

    fn lookup(&self, name: &str) -> Var<'a> {
        match self.values.get(name) {
            Some(v) => Var::Set(v),
            None if self.checking => Var::Unknown,
            None => Var::Unset,
        }
    }

    /// `Ok(None)`: the value depends on a variable that is unknown or missing.
    /// `Err`: a syntax error, described for the file's author.
    pub fn interpolate(&mut self, input: &str) -> Result<Option<String>, String> {
        if !input.contains('$') {
            return Ok(Some(input.to_owned()));
        }
        let mut out = String::with_capacity(input.len());
        let known = self.expand(input, &mut out)?;
        Ok(known.then_some(out))
    }

    /// Appends the expansion of `s` to `out`; returns whether every value was known.
    fn expand(&mut self, s: &str, out: &mut String) -> Result<bool, String> {
        let b = s.as_bytes();
        let mut known = true;
        let mut i = 0;
        let mut literal = 0;
        while i < b.len() {
            if b[i] != b'$' {
                i += 1;
                continue;
            }
            out.push_str(&s[literal..i]);
            match b.get(i + 1) {
                Some(b'$') => {
                    out.push('$');
                    i += 2;
                }
                Some(b'{') => {
                    let end = closing_brace(s, i + 2)?;
                    known &= self.braced(&s[i + 2..end], out)?;
                    i = end + 1;
                }
                Some(c) if c.is_ascii_alphabetic() || *c == b'_' => {
                    let end = name_end(b, i + 1);
                    known &= self.plain(&s[i + 1..end], out);
                    i = end;
                }
                // Like compose: a `$` that starts no reference stays literal.
                _ => {
                    out.push('$');
                    i += 1;
                }
            }
            literal = i;
        }
        out.push_str(&s[literal..]);
        Ok(known)
    }

    fn plain(&mut self, name: &str, out: &mut String) -> bool {
        match self.lookup(name) {
            Var::Set(v) => {
                out.push_str(v);
                true
            }
            Var::Unset => {
                self.missing.insert(name.to_owned());
                false
            }
            Var::Unknown => false,
        }
    }

    /// `expr` is what stands between `${` and the matching `}`.
    fn braced(&mut self, expr: &str, out: &mut String) -> Result<bool, String> {
        let end = name_end(expr.as_bytes(), 0);
        let name = &expr[..end];
        if name.is_empty() || name.as_bytes()[0].is_ascii_digit() {
            return Err(invalid(expr, "a variable name starts with a letter or '_'"));
        }
        let rest = &expr[end..];
        let (op, arg) = if rest.is_empty() {
            return Ok(self.plain(name, out));
        } else if let Some(op) = [":-", ":?", ":+"]
            .into_iter()
            .find(|op| rest.starts_with(op))
        {
            (op, &rest[2..])
        } else if let Some(op) = ["-", "?", "+"].into_iter().find(|op| rest.starts_with(op)) {
            (op, &rest[1..])
        } else {
            return Err(invalid(
                expr,
                "expected '}', ':-', '-', ':?', '?', ':+' or '+' after the name",
            ));
        };
        let var = self.lookup(name);
        // `:` forms treat an empty value like an unset one.
        let colon = op.starts_with(':');
        let has_value = match var {
            Var::Set(v) => !(colon && v.is_empty()),
            Var::Unset => false,
            Var::Unknown => {
                // The default applies when the variable stays unset, so check that path.
                if op.ends_with('-') {
                    return self.expand(arg, out);
                }
                if op.ends_with('+') {
                    // Still check the syntax of the alternative.
                    self.expand(arg, &mut String::new())?;
                }
                return Ok(false);
            }
        };
        let value = match var {
            Var::Set(v) => v,
            _ => "",
        };
        match (op.ends_with('-'), op.ends_with('?')) {
            // Default forms.
            (true, _) if has_value => {
                out.push_str(value);
                Ok(true)
            }
            (true, _) => self.expand(arg, out),
            // Required forms.
            (_, true) if has_value => {
                out.push_str(value);
                Ok(true)
            }
            (_, true) => {
                self.missing.insert(name.to_owned());
                self.required.push((name.to_owned(), arg.trim().to_owned()));
                Ok(false)
            }
            // Alternative forms.
            _ if has_value => self.expand(arg, out),
            _ => Ok(true),
        }
    }
}

fn name_end(b: &[u8], start: usize) -> usize {
    let mut end = start;
    while end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'_') {
        end += 1;
    }
    end
}

/// Index of the `}` closing a `${` whose body starts at `start`; nested `${…}` may occur in
/// defaults, `$$` is an escaped `$`.
fn closing_brace(s: &str, start: usize) -> Result<usize, String> {
    let b = s.as_bytes();
    let mut depth = 0usize;
    let mut i = start;
    while i < b.len() {
        match b[i] {
            b'$' if matches!(b.get(i + 1), Some(b'$')) => i += 2,
            b'$' if matches!(b.get(i + 1), Some(b'{')) => {
                depth += 1;
                i += 2;
            }
            b'}' if depth == 0 => return Ok(i),
            b'}' => {
                depth -= 1;
                i += 1;
            }
            _ => i += 1,
        }
    }
    Err(format!(
        "invalid interpolation in {:?}: '${{' is never closed (write $$ for a literal $)",
        s
    ))
}

fn invalid(expr: &str, why: &str) -> String {
    format!("invalid interpolation '${{{expr}}}': {why} (write $$ for a literal $)")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn resolve(input: &str, pairs: &[(&str, &str)]) -> Result<Option<String>, String> {
        let values = vars(pairs);
        Interpolator::resolving(&values).interpolate(input)
    }

    #[test]
    fn plain_and_braced_references() {
        let v = [("A", "1"), ("B_2", "two"), ("E", "")];
        assert_eq!(resolve("x${A}y$B_2/z", &v).unwrap().unwrap(), "x1ytwo/z");
        assert_eq!(resolve("$A$A", &v).unwrap().unwrap(), "11");
        assert_eq!(resolve("[${E}]", &v).unwrap().unwrap(), "[]");
        assert_eq!(
            resolve("no references", &v).unwrap().unwrap(),
            "no references"
        );
    }

    #[test]
    fn dollar_escapes_and_lone_dollars() {
        assert_eq!(
            resolve("$$HOME and $${A}", &[]).unwrap().unwrap(),
            "$HOME and ${A}"
        );
        assert_eq!(
            resolve("price: 5$ or $1 or $-", &[]).unwrap().unwrap(),
            "price: 5$ or $1 or $-"
        );
        assert_eq!(
            resolve("--password=\"$$(cat /run/secrets/pw)\"", &[])
                .unwrap()
                .unwrap(),
            "--password=\"$(cat /run/secrets/pw)\""
        );
    }

    #[test]
    fn default_forms_distinguish_unset_and_empty() {
        let v = [("EMPTY", ""), ("SET", "x")];
        assert_eq!(resolve("${UNSET:-d}", &v).unwrap().unwrap(), "d");
        assert_eq!(resolve("${EMPTY:-d}", &v).unwrap().unwrap(), "d");
        assert_eq!(resolve("${SET:-d}", &v).unwrap().unwrap(), "x");
        assert_eq!(resolve("${UNSET-d}", &v).unwrap().unwrap(), "d");
        assert_eq!(resolve("${EMPTY-d}", &v).unwrap().unwrap(), "");
        assert_eq!(resolve("${UNSET:-}", &v).unwrap().unwrap(), "");
        assert_eq!(resolve("${UNSET:-a:b-c}", &v).unwrap().unwrap(), "a:b-c");
        // Nested defaults are interpolated.
        assert_eq!(resolve("${UNSET:-${SET}/y}", &v).unwrap().unwrap(), "x/y");
        assert_eq!(
            resolve("${UNSET:-${ALSO_UNSET:-z}}", &v).unwrap().unwrap(),
            "z"
        );
    }

    #[test]
    fn alternative_forms() {
        let v = [("EMPTY", ""), ("SET", "x")];
        assert_eq!(resolve("${SET:+alt}", &v).unwrap().unwrap(), "alt");
        assert_eq!(resolve("${EMPTY:+alt}", &v).unwrap().unwrap(), "");
        assert_eq!(resolve("${EMPTY+alt}", &v).unwrap().unwrap(), "alt");
        assert_eq!(resolve("${UNSET+alt}", &v).unwrap().unwrap(), "");
    }

    #[test]
    fn missing_variables_are_collected_across_scalars() {
        let values = vars(&[("A", "1")]);
        let mut interp = Interpolator::resolving(&values);
        assert_eq!(interp.interpolate("${A}-${X}-$Y").unwrap(), None);
        assert_eq!(interp.interpolate("${Z}").unwrap(), None);
        assert_eq!(interp.interpolate("${A}").unwrap().unwrap(), "1");
        assert_eq!(interp.missing.iter().collect::<Vec<_>>(), ["X", "Y", "Z"]);
    }

    #[test]
    fn required_forms_record_the_message() {
        let values = vars(&[("EMPTY", ""), ("SET", "x")]);
        let mut interp = Interpolator::resolving(&values);
        assert_eq!(interp.interpolate("${SET:?no}").unwrap().unwrap(), "x");
        assert_eq!(interp.interpolate("${EMPTY?no}").unwrap().unwrap(), "");
        assert_eq!(interp.interpolate("${EMPTY:?set a token}").unwrap(), None);
        assert_eq!(interp.interpolate("${UNSET?}").unwrap(), None);
        assert_eq!(
            interp.required,
            [
                ("EMPTY".to_string(), "set a token".to_string()),
                ("UNSET".to_string(), String::new())
            ]
        );
        assert_eq!(
            interp.missing.iter().collect::<Vec<_>>(),
            ["EMPTY", "UNSET"]
        );
    }

    #[test]
    fn syntax_errors_are_reported() {
        for bad in ["${", "${A", "${}", "${1A}", "${A!x}", "${A:-${B}"] {
            let err = resolve(bad, &[("A", "1")]).unwrap_err();
            assert!(err.contains("invalid interpolation"), "{bad}: {err}");
        }
    }

    #[test]
    fn checking_defers_unknown_values_but_uses_defaults() {
        let defaults = vars(&[("PORT", "8080")]);
        let mut interp = Interpolator::checking(&defaults);
        assert_eq!(
            interp.interpolate("${PORT}:80").unwrap().unwrap(),
            "8080:80"
        );
        assert_eq!(
            interp.interpolate("img:${TAG:-v1}").unwrap().unwrap(),
            "img:v1"
        );
        assert_eq!(interp.interpolate("${TOKEN}").unwrap(), None);
        assert_eq!(interp.interpolate("${TOKEN:?needed}").unwrap(), None);
        assert_eq!(interp.interpolate("${TOKEN:+x}").unwrap(), None);
        // Unknown is not missing: the request may still bring it.
        assert!(interp.missing.is_empty() && interp.required.is_empty());
        assert!(interp.interpolate("${TOKEN:+${}}").is_err());
    }
}
