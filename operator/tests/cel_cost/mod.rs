//! An upper bound of the CEL cost that the Kubernetes API server estimates for a CRD's validation rules, and
//! the values those rules can reach.
//!
//! kube-cel's estimator does not agree with the API server's (it passed a CRD that a 1.28 server rejected
//! 62.4x over budget), so this one follows the server's own rules, for the constructs our rules use:
//!
//! - Sizes of schema values (k8s.io/apiserver/pkg/cel/common/schemas.go, `SchemaDeclType`): a string with
//!   `maxLength` holds at most 4 × maxLength (`estimateMaxElementsFromMaxLength`), one without it as much as a
//!   whole request, 3 MiB − 2 (`estimateMaxStringLengthPerRequest`, `DefaultMaxRequestSizeBytes` in
//!   k8s.io/apiserver/pkg/apis/cel/config.go); a list without `maxItems` holds (3 MiB − 2) / (min item size + 1)
//!   items, a map without `maxProperties` (3 MiB − 2) / (min value size + 6) entries.
//! - Costs of calls (google/cel-go checker/cost.go, `coster`): an identifier or a field selection 1, a literal 0,
//!   `has()` 1, `&&`/`||` the sum of their sides; `startsWith`/`endsWith` 0.1 per character of the prefix;
//!   `matches` ⌈0.1 × (string length + 1)⌉ × ⌈0.25 × regex length⌉; `contains` ⌈0.1 × length⌉ × ⌈0.1 × length⌉;
//!   `==` and string comparisons 0.1 per character of the shorter side; `in` on a list the list's size, on a map
//!   1; a comprehension (`all`, `exists`, …) its range, plus range size × (loop condition + loop step); every
//!   other call 1 — plus the cost of its arguments (`StringTraversalCostFactor` 0.1,
//!   `RegexStringLengthCostFactor` 0.25 in cel-go common/cost.go).
//! - Limits (k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/validation/validation.go): each rule's cost
//!   × the maximum cardinality of its schema node (the product of `maxItems`/`maxProperties` of the lists and
//!   maps above it, `getExpressionCost`) must stay within `StaticEstimatedCostLimit` (10,000,000), and the sum
//!   over all rules within `StaticEstimatedCRDCostLimit` (100,000,000). Where an ancestor is unbounded the
//!   server uses the rule's own `MaxCardinality`: 3 MiB / (min serialized size of the node + 1)
//!   (apiextensions-apiserver pkg/apiserver/schema/cel/compilation.go, `maxCardinality`).
//!
//! Only the maximum is tracked (the server rejects on the maximum). A construct the estimator does not model is
//! an error, so a new rule cannot slip past it unestimated.

use std::collections::BTreeMap;

use cel::common::ast::{CallExpr, ComprehensionExpr, Expr, LiteralValue};
use cel::IdedExpr;
use serde_json::Value;

/// The largest request the API server accepts, which bounds every unbounded value.
pub const MAX_REQUEST_SIZE_BYTES: u64 = 3 * 1024 * 1024;
/// Largest estimated cost of one rule (times its node's cardinality).
pub const STATIC_ESTIMATED_COST_LIMIT: u64 = 10_000_000;
/// Largest estimated cost of all rules of a CRD together.
pub const STATIC_ESTIMATED_CRD_COST_LIMIT: u64 = 100_000_000;
const STRING_TRAVERSAL_COST_FACTOR: f64 = 0.1;
const REGEX_STRING_LENGTH_COST_FACTOR: f64 = 0.25;
/// Minimum serialized sizes (k8s.io/apiserver/pkg/cel/types.go): `""`, `0`, `true`, `[]`/`{}`.
const MIN_STRING_SIZE: u64 = 2;
const MIN_INT_SIZE: u64 = 1;
const MIN_BOOL_SIZE: u64 = 4;
const MIN_CONTAINER_SIZE: u64 = 2;

/// What a schema node is to CEL, with the size bounds the API server derives for it.
#[derive(Clone, Debug)]
pub enum Decl {
    /// A string of at most `max` characters; `declared` when the schema bounds it (maxLength, enum, format).
    Str { max: u64, declared: bool },
    /// A list of at most `max` items.
    List { item: Box<Decl>, max: u64, declared: bool },
    /// A map of at most `max` entries.
    Map { value: Box<Decl>, max: u64, declared: bool },
    /// An object with named fields.
    Object { fields: BTreeMap<String, Decl>, min_size: u64 },
    /// `x-kubernetes-int-or-string`.
    IntOrString { max: u64, declared: bool },
    /// An integer, number or boolean.
    Scalar { min_size: u64 },
}

impl Decl {
    /// The CEL type of `schema`, as `SchemaDeclType` builds it.
    pub fn of(schema: &Value) -> Decl {
        let unbounded_string = MAX_REQUEST_SIZE_BYTES - 2;
        if schema["x-kubernetes-int-or-string"] == true {
            return match schema["maxLength"].as_u64() {
                Some(n) => Decl::IntOrString { max: 4 * n, declared: true },
                None => Decl::IntOrString { max: unbounded_string, declared: false },
            };
        }
        match schema["type"].as_str() {
            Some("string") => {
                if let Some(n) = schema["maxLength"].as_u64() {
                    Decl::Str { max: 4 * n, declared: true }
                } else if let Some(values) = schema["enum"].as_array() {
                    let longest = values.iter().filter_map(Value::as_str).map(|s| s.chars().count()).max();
                    Decl::Str { max: longest.unwrap_or(0) as u64, declared: true }
                } else {
                    // Formats with a fixed largest size (MaxDurationSizeJSON, JSONDateSize, MaxDatetimeSizeJSON).
                    match schema["format"].as_str() {
                        Some("duration") => Decl::Str { max: 32, declared: true },
                        Some("date") => Decl::Str { max: 10, declared: true },
                        Some("date-time") => Decl::Str { max: 32, declared: true },
                        _ => Decl::Str { max: unbounded_string, declared: false },
                    }
                }
            }
            Some("array") => {
                let item = Decl::of(&schema["items"]);
                match schema["maxItems"].as_u64() {
                    Some(n) => Decl::List { item: Box::new(item), max: n, declared: true },
                    None => {
                        let max = (MAX_REQUEST_SIZE_BYTES - 2) / (item.min_size() + 1);
                        Decl::List { item: Box::new(item), max, declared: false }
                    }
                }
            }
            Some("object") if schema["additionalProperties"].is_object() => {
                let value = Decl::of(&schema["additionalProperties"]);
                match schema["maxProperties"].as_u64() {
                    Some(n) => Decl::Map { value: Box::new(value), max: n, declared: true },
                    None => {
                        let max = (MAX_REQUEST_SIZE_BYTES - 2) / (value.min_size() + 6);
                        Decl::Map { value: Box::new(value), max, declared: false }
                    }
                }
            }
            Some("object") => {
                let required: Vec<&str> = schema["required"]
                    .as_array()
                    .map(|r| r.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                let mut fields = BTreeMap::new();
                let mut min_size = MIN_CONTAINER_SIZE;
                for (name, prop) in schema["properties"].as_object().into_iter().flatten() {
                    let decl = Decl::of(prop);
                    // Only required fields without a default count: the server fills defaults.
                    if required.contains(&name.as_str()) && prop.get("default").is_none() {
                        min_size += name.len() as u64 + decl.min_size() + 4;
                    }
                    fields.insert(name.clone(), decl);
                }
                Decl::Object { fields, min_size }
            }
            Some("boolean") => Decl::Scalar { min_size: MIN_BOOL_SIZE },
            _ => Decl::Scalar { min_size: MIN_INT_SIZE },
        }
    }

    fn min_size(&self) -> u64 {
        match self {
            Decl::Str { .. } => MIN_STRING_SIZE,
            Decl::List { .. } | Decl::Map { .. } => MIN_CONTAINER_SIZE,
            Decl::Object { min_size, .. } | Decl::Scalar { min_size } => *min_size,
            Decl::IntOrString { .. } => 1,
        }
    }

    /// The size CEL's `size()` can reach, if the value has one.
    fn max_size(&self) -> Option<u64> {
        match self {
            Decl::Str { max, .. } | Decl::List { max, .. } | Decl::Map { max, .. } | Decl::IntOrString { max, .. } => {
                Some(*max)
            }
            Decl::Object { .. } | Decl::Scalar { .. } => None,
        }
    }

    /// Whether the schema declares the bound (rather than the server deriving it from the request size).
    fn declared(&self) -> Option<bool> {
        match self {
            Decl::Str { declared, .. }
            | Decl::List { declared, .. }
            | Decl::Map { declared, .. }
            | Decl::IntOrString { declared, .. } => Some(*declared),
            Decl::Object { .. } | Decl::Scalar { .. } => None,
        }
    }
}

/// What the estimator knows of an expression's value.
#[derive(Clone, Debug, Default)]
struct Info {
    /// The schema declaration the value comes from, if any.
    decl: Option<Decl>,
    /// The value's path from the rule's node, as `.field`, `[]` (list item), `{}` (map value).
    path: Option<String>,
    /// A computed size (string literals).
    size: Option<u64>,
    /// Whether it is a string (for comparisons).
    string: bool,
}

impl Info {
    fn of_decl(decl: &Decl, path: String) -> Info {
        let string = matches!(decl, Decl::Str { .. });
        Info { decl: Some(decl.clone()), path: Some(path), size: None, string }
    }

    /// The largest size, as cel-go's `sizeOrUnknown`: scalars count 1, anything unknown the largest integer.
    fn max_size(&self) -> u64 {
        if let Some(size) = self.size {
            return size;
        }
        match &self.decl {
            Some(decl) => decl.max_size().unwrap_or(1),
            None => 1,
        }
    }
}

/// A value of the schema that a rule reaches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reach {
    /// Path from the rule's node (`self`), e.g. `.env[].name`.
    pub path: String,
    /// Whether its size is declared in the schema.
    pub bounded: bool,
}

/// One rule's estimate.
#[derive(Clone, Debug)]
pub struct RuleCost {
    /// Path of the schema node that carries the rule.
    pub node: String,
    /// The rule.
    pub rule: String,
    /// The rule's own cost.
    pub cost: u64,
    /// The cardinality the server multiplies it by.
    pub cardinality: u64,
    /// Strings, lists and maps the rule reaches.
    pub reaches: Vec<Reach>,
}

impl RuleCost {
    /// Cost × cardinality, what the server compares with its limits.
    pub fn total(&self) -> u64 {
        self.cost.saturating_mul(self.cardinality)
    }
}

/// The factor by which `cost` exceeds `limit`, written as the API server writes it (`getCostErrorMessage`).
pub fn factor(cost: u64, limit: u64) -> String {
    let factor = cost as f64 / limit as f64;
    if factor > 100.0 {
        "more than 100x".to_string()
    } else if factor < 1.5 {
        format!("{factor:.6}x")
    } else {
        format!("{factor:.1}x")
    }
}

/// Every rule of `schema` (an openAPIV3Schema), with its cost and the values it reaches.
pub fn estimate_schema(schema: &Value) -> Result<Vec<RuleCost>, String> {
    let mut out = Vec::new();
    walk(schema, String::new(), Some(1), &mut out)?;
    Ok(out)
}

/// Problems the API server would report: rules over the per-rule limit, the whole CRD over its limit.
pub fn budget_problems(rules: &[RuleCost]) -> Vec<String> {
    let mut problems = Vec::new();
    for r in rules {
        if r.total() > STATIC_ESTIMATED_COST_LIMIT {
            problems.push(format!(
                "{}: estimated rule cost exceeds budget by factor of {} ({} × cardinality {}): {}",
                r.node,
                factor(r.total(), STATIC_ESTIMATED_COST_LIMIT),
                r.cost,
                r.cardinality,
                r.rule
            ));
        }
    }
    let sum = rules.iter().fold(0u64, |acc, r| acc.saturating_add(r.total()));
    if sum > STATIC_ESTIMATED_CRD_COST_LIMIT {
        problems.push(format!(
            "x-kubernetes-validations estimated rule cost total for entire OpenAPIv3 schema exceeds budget by factor of {}",
            factor(sum, STATIC_ESTIMATED_CRD_COST_LIMIT)
        ));
    }
    problems
}

fn walk(node: &Value, path: String, cardinality: Option<u64>, out: &mut Vec<RuleCost>) -> Result<(), String> {
    let Value::Object(map) = node else { return Ok(()) };
    if let Some(rules) = map.get("x-kubernetes-validations").and_then(Value::as_array) {
        let decl = Decl::of(node);
        // An unbounded ancestor: the server falls back on how many such nodes fit into a request.
        let cardinality = cardinality.unwrap_or(MAX_REQUEST_SIZE_BYTES / (decl.min_size() + 1));
        for rule in rules {
            let text = rule["rule"].as_str().ok_or_else(|| format!("{path}: a rule without text"))?;
            let (cost, reaches) = estimate_rule(text, &decl).map_err(|e| format!("{path}: {text}: {e}"))?;
            out.push(RuleCost { node: path.clone(), rule: text.to_string(), cost, cardinality, reaches });
        }
    }
    for (name, prop) in map.get("properties").and_then(Value::as_object).into_iter().flatten() {
        walk(prop, format!("{path}.{name}"), cardinality, out)?;
    }
    if let Some(items) = map.get("items") {
        let card = cardinality.zip(map.get("maxItems").and_then(Value::as_u64)).map(|(c, n)| c.saturating_mul(n));
        walk(items, format!("{path}[]"), card, out)?;
    }
    if let Some(values) = map.get("additionalProperties").filter(|v| v.is_object()) {
        let card = cardinality.zip(map.get("maxProperties").and_then(Value::as_u64)).map(|(c, n)| c.saturating_mul(n));
        walk(values, format!("{path}{{}}"), card, out)?;
    }
    Ok(())
}

/// The cost of `rule` on a node declared as `decl`, and the strings, lists and maps it reaches.
pub fn estimate_rule(rule: &str, decl: &Decl) -> Result<(u64, Vec<Reach>), String> {
    let ast = cel::parser::Parser::new().parse(rule).map_err(|e| format!("does not parse: {e}"))?;
    let mut coster = Coster { scopes: vec![("self".to_string(), Info::of_decl(decl, String::new()))], reaches: vec![] };
    let (cost, _) = coster.cost(&ast)?;
    let mut reaches = coster.reaches;
    reaches.sort_by(|a, b| a.path.cmp(&b.path));
    reaches.dedup();
    Ok((cost, reaches))
}

struct Coster {
    /// Variables in scope, innermost last.
    scopes: Vec<(String, Info)>,
    reaches: Vec<Reach>,
}

fn ceil_factor(size: u64, factor: f64) -> u64 {
    let product = (size as f64 * factor).ceil();
    if product >= u64::MAX as f64 {
        u64::MAX
    } else {
        product as u64
    }
}

impl Coster {
    fn reach(&mut self, info: &Info) {
        if let (Some(decl), Some(path)) = (&info.decl, &info.path) {
            if let Some(declared) = decl.declared() {
                let path = if path.is_empty() { "self".to_string() } else { path.clone() };
                self.reaches.push(Reach { path, bounded: declared });
            }
        }
    }

    fn cost(&mut self, e: &IdedExpr) -> Result<(u64, Info), String> {
        match &e.expr {
            Expr::Literal(LiteralValue::String(s)) => {
                let size = s.inner().chars().count() as u64;
                Ok((0, Info { size: Some(size), string: true, ..Info::default() }))
            }
            Expr::Literal(_) => Ok((0, Info::default())),
            Expr::Ident(name) => {
                let info = self
                    .scopes
                    .iter()
                    .rev()
                    .find(|(n, _)| n == name)
                    .map(|(_, i)| i.clone())
                    .ok_or_else(|| format!("unknown identifier {name}"))?;
                self.reach(&info);
                Ok((1, info))
            }
            Expr::Select(sel) => {
                let (operand_cost, operand) = self.cost(&sel.operand)?;
                let field = field_of(&operand, &sel.field)?;
                if sel.test {
                    // has(): the presence test costs 1 and reads no value.
                    return Ok((operand_cost + 1, Info::default()));
                }
                self.reach(&field);
                Ok((operand_cost + 1, field))
            }
            Expr::Call(call) => self.cost_call(call),
            Expr::Comprehension(comp) => self.cost_comprehension(comp),
            other => Err(format!("the estimator does not model {other:?}; extend tests/cel_cost")),
        }
    }

    fn cost_comprehension(&mut self, comp: &ComprehensionExpr) -> Result<(u64, Info), String> {
        if comp.iter_var2.is_some() {
            return Err("two-variable comprehensions are not modelled".into());
        }
        let (range_cost, range) = self.cost(&comp.iter_range)?;
        let (init_cost, _) = self.cost(&comp.accu_init)?;
        let item = match (&range.decl, &range.path) {
            (Some(Decl::List { item, .. }), Some(path)) => Info::of_decl(item, format!("{path}[]")),
            (Some(Decl::Map { .. }), Some(path)) => {
                // Keys of a map have no schema: as large as the request allows.
                let keys = Decl::Str { max: MAX_REQUEST_SIZE_BYTES - 2, declared: false };
                Info::of_decl(&keys, format!("{path}{{keys}}"))
            }
            _ => return Err("a comprehension over something other than a schema list or map".into()),
        };
        self.scopes.push((comp.accu_var.clone(), Info::default()));
        self.scopes.push((comp.iter_var.clone(), item));
        let (cond_cost, _) = self.cost(&comp.loop_cond)?;
        let (step_cost, _) = self.cost(&comp.loop_step)?;
        self.scopes.pop();
        let (result_cost, _) = self.cost(&comp.result)?;
        self.scopes.pop();
        let loop_cost = range.max_size().saturating_mul(cond_cost.saturating_add(step_cost));
        Ok((range_cost + init_cost + result_cost + loop_cost, Info::default()))
    }

    fn cost_call(&mut self, call: &CallExpr) -> Result<(u64, Info), String> {
        let mut sum = 0u64;
        let target = match &call.target {
            Some(t) => {
                let (c, info) = self.cost(t)?;
                sum = sum.saturating_add(c);
                Some(info)
            }
            None => None,
        };
        let mut args = Vec::new();
        for a in &call.args {
            let (c, info) = self.cost(a)?;
            sum = sum.saturating_add(c);
            args.push(info);
        }
        let bool_result = Info::default();
        let call_cost = match (call.func_name.as_str(), &target, args.as_slice()) {
            ("_&&_" | "_||_", None, [_, _]) => 0,
            ("_?_:_", None, [_, _, _]) => return Err("conditionals are not modelled".into()),
            ("!_" | "@not_strictly_false" | "-_", None, [_]) => 1,
            ("size", None, [_]) | ("size", Some(_), []) => 1,
            ("startsWith" | "endsWith", Some(_), [prefix]) => {
                ceil_factor(prefix.max_size(), STRING_TRAVERSAL_COST_FACTOR)
            }
            ("matches", Some(s), [regex]) => {
                let str_cost = ceil_factor(s.max_size().saturating_add(1), STRING_TRAVERSAL_COST_FACTOR);
                let regex_cost = ceil_factor(regex.max_size(), REGEX_STRING_LENGTH_COST_FACTOR);
                str_cost.saturating_mul(regex_cost)
            }
            ("contains", Some(s), [sub]) => ceil_factor(s.max_size(), STRING_TRAVERSAL_COST_FACTOR)
                .saturating_mul(ceil_factor(sub.max_size(), STRING_TRAVERSAL_COST_FACTOR)),
            ("@in", None, [_, container]) => match &container.decl {
                Some(Decl::List { max, .. }) => *max,
                Some(Decl::Map { .. }) => 1,
                _ => return Err("`in` on something other than a schema list or map".into()),
            },
            ("_==_" | "_!=_", None, [a, b]) => {
                ceil_factor(a.max_size().min(b.max_size()), STRING_TRAVERSAL_COST_FACTOR)
            }
            ("_<_" | "_<=_" | "_>_" | "_>=_", None, [a, b]) if a.string || b.string => {
                ceil_factor(a.max_size().min(b.max_size()), STRING_TRAVERSAL_COST_FACTOR)
            }
            ("_<_" | "_<=_" | "_>_" | "_>=_" | "_-_" | "_*_" | "_/_" | "_%_", None, [_, _]) => 1,
            (name, _, _) => {
                return Err(format!("the estimator does not model the function {name}; extend tests/cel_cost"))
            }
        };
        Ok((sum.saturating_add(call_cost), bool_result))
    }
}

/// The value of `field` selected from `operand`.
fn field_of(operand: &Info, field: &str) -> Result<Info, String> {
    let path = operand.path.clone().unwrap_or_default();
    match &operand.decl {
        Some(Decl::Object { fields, .. }) => fields
            .get(field)
            .map(|d| Info::of_decl(d, format!("{path}.{field}")))
            .ok_or_else(|| format!("no field {field} at {path}")),
        Some(Decl::Map { value, .. }) => Ok(Info::of_decl(value, format!("{path}{{}}"))),
        _ => Err(format!("selecting {field} from a value that is not an object")),
    }
}
