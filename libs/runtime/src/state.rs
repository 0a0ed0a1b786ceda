//! The `/state` board: components (breakers, bulkheads, faults, the capacity model) publish
//! a JSON view of themselves, read on every request to `/state`.

use std::sync::{Arc, RwLock};

use serde_json::{Map, Value};

type Provider = Arc<dyn Fn() -> Value + Send + Sync>;

#[derive(Clone, Default)]
pub struct StateBoard {
    providers: Arc<RwLock<Vec<(String, Provider)>>>,
}

impl std::fmt::Debug for StateBoard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateBoard").finish_non_exhaustive()
    }
}

impl StateBoard {
    /// Publishes `name` in `/state`; `provider` is called on every read. A later
    /// registration under the same name replaces the earlier one. A `/` in the name nests:
    /// `hops/payments` appears as `{"hops": {"payments": …}}`.
    pub fn register(
        &self,
        name: impl Into<String>,
        provider: impl Fn() -> Value + Send + Sync + 'static,
    ) {
        let name = name.into();
        let mut providers = self.providers.write().unwrap_or_else(|p| p.into_inner());
        providers.retain(|(n, _)| *n != name);
        providers.push((name, Arc::new(provider)));
    }

    pub fn snapshot(&self) -> Value {
        let providers = self
            .providers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut map = Map::new();
        for (name, provider) in providers {
            let mut parts: Vec<&str> = name.split('/').collect();
            let leaf = parts.pop().unwrap_or_default();
            let mut node = &mut map;
            for part in parts {
                let child = node
                    .entry(part.to_string())
                    .or_insert_with(|| Value::Object(Map::new()));
                if !child.is_object() {
                    *child = Value::Object(Map::new());
                }
                node = child.as_object_mut().expect("just made an object");
            }
            node.insert(leaf.to_string(), provider());
        }
        Value::Object(map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn providers_are_read_live_and_replaced_by_name() {
        let board = StateBoard::default();
        let n = Arc::new(std::sync::atomic::AtomicU64::new(1));
        let n2 = n.clone();
        board.register("counter", move || {
            serde_json::json!(n2.load(std::sync::atomic::Ordering::Relaxed))
        });
        assert_eq!(board.snapshot()["counter"], 1);
        n.store(5, std::sync::atomic::Ordering::Relaxed);
        assert_eq!(board.snapshot()["counter"], 5);
        board.register("counter", || serde_json::json!("x"));
        assert_eq!(board.snapshot(), serde_json::json!({"counter": "x"}));
        board.register("hops/payments", || serde_json::json!(1));
        board.register("hops/inventory", || serde_json::json!(2));
        assert_eq!(
            board.snapshot()["hops"],
            serde_json::json!({"payments": 1, "inventory": 2})
        );
    }
}
