//! The layout dump: every structure and constant of every spec, by C name.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::model::{Spec, Val};

/// `{"structs": {C_NAME: {"size", "align", "fields": {F: {"offset", "size"}}}}, "constants": {C_NAME: V}}`.
pub fn layout(specs: &[Spec]) -> Value {
    let mut structs = BTreeMap::new();
    let mut constants = BTreeMap::new();
    for spec in specs {
        for t in &spec.types {
            let fields: BTreeMap<_, _> = t
                .fields
                .iter()
                .map(|f| (f.name.clone(), json!({"offset": f.offset, "size": f.size})))
                .collect();
            structs.insert(
                t.name.clone(),
                json!({"size": t.size, "align": t.align, "union": t.is_union, "fields": fields}),
            );
        }
        for (_, v) in spec.constants() {
            let value = match &v.value {
                Val::Int(i) => match i64::try_from(*i) {
                    Ok(x) => json!(x),
                    Err(_) => json!(*i as u64),
                },
                Val::Str(s) => json!(s),
            };
            constants.insert(v.name.clone(), value);
        }
    }
    json!({"structs": structs, "constants": constants})
}
