//! [`Calculator`]: arithmetic for agents, parsed and evaluated here (no code
//! is ever executed).

use async_trait::async_trait;
use kb_core::{Error, Result, Tool};
use serde_json::{Value, json};

/// Longest expression accepted, in characters.
const MAX_LEN: usize = 1_000;
/// Deepest nesting of parentheses and operators accepted.
const MAX_DEPTH: usize = 64;

/// A safe calculator: `+ - * / % ^` (also `× ÷ − **`), parentheses, the
/// constants `pi`, `e`, `tau`, and the functions `sqrt cbrt abs exp ln log
/// (base 10) log2 sin cos tan asin acos atan floor ceil round min max pow
/// hypot`.
///
/// ```
/// use kb_agents::tools::{evaluate, Calculator};
/// use kb_core::Tool;
/// assert_eq!(evaluate("2 * (3 + 4) ^ 2")?, 98.0);
/// assert_eq!(evaluate("max(1, sqrt(16)) ÷ 2")?, 2.0);
/// assert!(evaluate("1 / 0").is_err());
/// # futures::executor::block_on(async {
/// assert_eq!(Calculator.call(serde_json::json!({"expression": "10 % 4 + 0.5"})).await?, "2.5");
/// # Ok::<(), kb_core::Error>(())
/// # }).unwrap();
/// # Ok::<(), kb_core::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Calculator;

#[async_trait]
impl Tool for Calculator {
    fn name(&self) -> &str {
        "calculator"
    }

    fn description(&self) -> &str {
        "Evaluates an arithmetic expression exactly, e.g. \"(17 + 5) * 3 / 2\" or \"sqrt(2) ^ 3\". \
         Use it for any calculation instead of computing in your head."
    }

    fn parameters(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "expression": {"type": "string", "description": "The expression, e.g. \"3 * (4 + 5)\""}
            },
            "required": ["expression"],
        })
    }

    async fn call(&self, args: Value) -> Result<String> {
        let expression = match &args {
            Value::String(s) => s.as_str(),
            Value::Number(_) => return Ok(args.to_string()),
            _ => args
                .get("expression")
                .or_else(|| args.get("expr"))
                .or_else(|| args.get("input"))
                .and_then(Value::as_str)
                .ok_or_else(|| tool_error("give the expression as {\"expression\": \"…\"}"))?,
        };
        evaluate(expression).map(format_number)
    }
}

fn tool_error(message: impl Into<String>) -> Error {
    Error::Tool {
        tool: "calculator".into(),
        message: message.into(),
    }
}

/// Evaluates `expression` (see [`Calculator`] for what it accepts).
pub fn evaluate(expression: &str) -> Result<f64> {
    if expression.chars().count() > MAX_LEN {
        return Err(tool_error(format!(
            "the expression is longer than {MAX_LEN} characters"
        )));
    }
    let tokens = lex(expression)?;
    let mut parser = Parser {
        tokens: &tokens,
        pos: 0,
        depth: 0,
    };
    let value = parser.expr()?;
    if let Some(token) = parser.tokens.get(parser.pos) {
        return Err(tool_error(format!(
            "unexpected {} after a complete expression",
            token.describe()
        )));
    }
    if !value.is_finite() {
        return Err(tool_error(
            "the result is not a finite number (division by zero or overflow)",
        ));
    }
    Ok(value)
}

/// A number as a person writes it: integers without a decimal point, others
/// with at most 12 significant digits.
pub fn format_number(value: f64) -> String {
    if value == value.trunc() && value.abs() < 1e15 {
        return format!("{}", value as i64);
    }
    let text = format!(
        "{:.*}",
        12usize.saturating_sub(value.abs().log10().max(0.0) as usize),
        value
    );
    let text = text.trim_end_matches('0').trim_end_matches('.');
    text.to_string()
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Number(f64),
    Name(String),
    Op(char),
    Open,
    Close,
    Comma,
}

impl Token {
    fn describe(&self) -> String {
        match self {
            Token::Number(n) => format!("number {}", format_number(*n)),
            Token::Name(name) => format!("name {name:?}"),
            Token::Op(c) => format!("operator {c:?}"),
            Token::Open => "\"(\"".into(),
            Token::Close => "\")\"".into(),
            Token::Comma => "\",\"".into(),
        }
    }
}

fn lex(text: &str) -> Result<Vec<Token>> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '0'..='9' | '.' => {
                let start = i;
                while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                    i += 1;
                }
                // An exponent: 1e5, 2.5E-3.
                if i < chars.len()
                    && matches!(chars[i], 'e' | 'E')
                    && chars
                        .get(i + 1)
                        .is_some_and(|d| d.is_ascii_digit() || matches!(d, '+' | '-'))
                {
                    i += 2;
                    while i < chars.len() && chars[i].is_ascii_digit() {
                        i += 1;
                    }
                }
                let literal: String = chars[start..i].iter().collect();
                let value = literal
                    .parse()
                    .map_err(|_| tool_error(format!("{literal:?} is not a number")))?;
                tokens.push(Token::Number(value));
            }
            c if c.is_alphabetic() || c == '_' => {
                let start = i;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
                tokens.push(Token::Name(
                    chars[start..i].iter().collect::<String>().to_lowercase(),
                ));
            }
            '*' if chars.get(i + 1) == Some(&'*') => {
                tokens.push(Token::Op('^'));
                i += 2;
            }
            '+' | '-' | '*' | '/' | '%' | '^' => {
                tokens.push(Token::Op(c));
                i += 1;
            }
            '−' | '–' => {
                tokens.push(Token::Op('-'));
                i += 1;
            }
            '×' | '·' => {
                tokens.push(Token::Op('*'));
                i += 1;
            }
            '÷' => {
                tokens.push(Token::Op('/'));
                i += 1;
            }
            '(' | '[' => {
                tokens.push(Token::Open);
                i += 1;
            }
            ')' | ']' => {
                tokens.push(Token::Close);
                i += 1;
            }
            ',' => {
                tokens.push(Token::Comma);
                i += 1;
            }
            '=' if chars[i + 1..].iter().all(|c| c.is_whitespace()) => i = chars.len(),
            other => {
                return Err(tool_error(format!(
                    "unexpected character {other:?}; only numbers, + - * / % ^, parentheses and functions are allowed"
                )));
            }
        }
    }
    if tokens.is_empty() {
        return Err(tool_error("the expression is empty"));
    }
    Ok(tokens)
}

struct Parser<'a> {
    tokens: &'a [Token],
    pos: usize,
    depth: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.pos)
    }

    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.pos).cloned();
        self.pos += 1;
        token
    }

    fn enter(&mut self) -> Result<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(tool_error(format!("nesting deeper than {MAX_DEPTH}")));
        }
        Ok(())
    }

    /// expr := term (('+' | '-') term)*
    fn expr(&mut self) -> Result<f64> {
        self.enter()?;
        let mut value = self.term()?;
        while let Some(Token::Op(op @ ('+' | '-'))) = self.peek().cloned() {
            self.pos += 1;
            let rhs = self.term()?;
            value = if op == '+' { value + rhs } else { value - rhs };
        }
        self.depth -= 1;
        Ok(value)
    }

    /// term := unary (('*' | '/' | '%') unary)*
    fn term(&mut self) -> Result<f64> {
        let mut value = self.unary()?;
        while let Some(Token::Op(op @ ('*' | '/' | '%'))) = self.peek().cloned() {
            self.pos += 1;
            let rhs = self.unary()?;
            value = match op {
                '*' => value * rhs,
                _ if rhs == 0.0 => return Err(tool_error("division by zero")),
                '/' => value / rhs,
                _ => value % rhs,
            };
        }
        Ok(value)
    }

    /// unary := ('-' | '+') unary | power
    fn unary(&mut self) -> Result<f64> {
        match self.peek() {
            Some(Token::Op('-')) => {
                self.pos += 1;
                self.enter()?;
                let value = -self.unary()?;
                self.depth -= 1;
                Ok(value)
            }
            Some(Token::Op('+')) => {
                self.pos += 1;
                self.unary()
            }
            _ => self.power(),
        }
    }

    /// power := atom ('^' unary)?, right-associative.
    fn power(&mut self) -> Result<f64> {
        let base = self.atom()?;
        if let Some(Token::Op('^')) = self.peek() {
            self.pos += 1;
            self.enter()?;
            let exponent = self.unary()?;
            self.depth -= 1;
            return Ok(base.powf(exponent));
        }
        Ok(base)
    }

    /// atom := number | name | name '(' args ')' | '(' expr ')'
    fn atom(&mut self) -> Result<f64> {
        match self.next() {
            Some(Token::Number(n)) => Ok(n),
            Some(Token::Open) => {
                let value = self.expr()?;
                match self.next() {
                    Some(Token::Close) => Ok(value),
                    _ => Err(tool_error("a \"(\" is never closed")),
                }
            }
            Some(Token::Name(name)) => {
                if let Some(value) = constant(&name) {
                    return Ok(value);
                }
                if self.peek() != Some(&Token::Open) {
                    return Err(tool_error(format!(
                        "unknown name {name:?}; use numbers, pi, e, or a function like sqrt(x)"
                    )));
                }
                self.pos += 1;
                let mut args = Vec::new();
                if self.peek() != Some(&Token::Close) {
                    loop {
                        args.push(self.expr()?);
                        match self.next() {
                            Some(Token::Comma) => continue,
                            Some(Token::Close) => break,
                            _ => return Err(tool_error(format!("{name}( is never closed"))),
                        }
                    }
                } else {
                    self.pos += 1;
                }
                function(&name, &args)
            }
            Some(token) => Err(tool_error(format!("unexpected {}", token.describe()))),
            None => Err(tool_error("the expression ends too early")),
        }
    }
}

fn constant(name: &str) -> Option<f64> {
    match name {
        "pi" | "π" => Some(std::f64::consts::PI),
        "e" => Some(std::f64::consts::E),
        "tau" => Some(std::f64::consts::TAU),
        _ => None,
    }
}

fn function(name: &str, args: &[f64]) -> Result<f64> {
    let one = |f: fn(f64) -> f64| match args {
        [x] => Ok(f(*x)),
        _ => Err(tool_error(format!(
            "{name} takes one argument, got {}",
            args.len()
        ))),
    };
    let two = |f: fn(f64, f64) -> f64| match args {
        [x, y] => Ok(f(*x, *y)),
        _ => Err(tool_error(format!(
            "{name} takes two arguments, got {}",
            args.len()
        ))),
    };
    match name {
        "sqrt" => match args {
            [x] if *x < 0.0 => Err(tool_error("sqrt of a negative number")),
            _ => one(f64::sqrt),
        },
        "cbrt" => one(f64::cbrt),
        "abs" => one(f64::abs),
        "exp" => one(f64::exp),
        "ln" => one(f64::ln),
        "log" | "log10" => one(f64::log10),
        "log2" => one(f64::log2),
        "sin" => one(f64::sin),
        "cos" => one(f64::cos),
        "tan" => one(f64::tan),
        "asin" => one(f64::asin),
        "acos" => one(f64::acos),
        "atan" => one(f64::atan),
        "floor" => one(f64::floor),
        "ceil" => one(f64::ceil),
        "round" => one(f64::round),
        "pow" => two(f64::powf),
        "hypot" => two(f64::hypot),
        "min" | "max" if !args.is_empty() => Ok(args
            .iter()
            .copied()
            .reduce(if name == "min" { f64::min } else { f64::max })
            .unwrap_or(f64::NAN)),
        "min" | "max" => Err(tool_error(format!("{name} needs at least one argument"))),
        other => Err(tool_error(format!("unknown function {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_and_associativity() {
        let cases = [
            ("1 + 2 * 3", 7.0),
            ("(1 + 2) * 3", 9.0),
            ("2 ^ 3 ^ 2", 512.0),
            ("-2 ^ 2", -4.0),
            ("2 ** 10", 1024.0),
            ("10 - 4 - 3", 3.0),
            ("100 / 10 / 5", 2.0),
            ("7 % 3", 1.0),
            ("3 × 4 − 2 ÷ 2", 11.0),
            ("1.5e3 + .5", 1500.5),
            ("min(3, 1, 2) + max(4, 5)", 6.0),
            ("hypot(3, 4)", 5.0),
            ("log(1000) + ln(e)", 4.0),
            ("round(e * 100) / 100", 2.72),
            ("[2 + 3] * 2 =", 10.0),
        ];
        for (expression, expected) in cases {
            let got = evaluate(expression).unwrap_or_else(|e| panic!("{expression}: {e}"));
            assert!(
                (got - expected).abs() < 1e-9,
                "{expression} = {got}, not {expected}"
            );
        }
    }

    #[test]
    fn bad_input_is_a_clear_error() {
        for (expression, needle) in [
            ("1 / 0", "division by zero"),
            ("2 +", "ends too early"),
            ("(1 + 2", "never closed"),
            ("import os", "unknown name"),
            ("__import__('os')", "unexpected character"),
            ("foo(1)", "unknown function"),
            ("sqrt(-1)", "negative"),
            ("1 2", "after a complete expression"),
            ("", "empty"),
            ("10 ^ 400", "finite"),
        ] {
            let err = evaluate(expression).expect_err(expression).to_string();
            assert!(err.contains(needle), "{expression}: {err}");
        }
        let deep = format!("{}1{}", "(".repeat(200), ")".repeat(200));
        assert!(
            evaluate(&deep)
                .expect_err("deep")
                .to_string()
                .contains("nesting")
        );
        let long = "1+".repeat(600) + "1";
        assert!(
            evaluate(&long)
                .expect_err("long")
                .to_string()
                .contains("longer")
        );
    }

    #[test]
    fn numbers_print_plainly() {
        assert_eq!(format_number(42.0), "42");
        assert_eq!(format_number(-3.0), "-3");
        assert_eq!(format_number(2.5), "2.5");
        assert_eq!(format_number(1.0 / 3.0), "0.333333333333");
        assert_eq!(format_number(1234.5678), "1234.5678");
    }
}
