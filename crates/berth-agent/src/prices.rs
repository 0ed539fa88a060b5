//! What model tokens cost, for `max_usd` budgets and the usage a task shows. Prices are US
//! dollars per million tokens; the server's configuration can add models or change figures.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::model::TokenUsage;

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input: f64,
    pub output: f64,
    /// Writing the prompt cache (5-minute entries).
    pub cache_write: f64,
    pub cache_read: f64,
}

impl Price {
    pub fn cost(&self, usage: &TokenUsage) -> f64 {
        (usage.input as f64 * self.input
            + usage.output as f64 * self.output
            + usage.cache_write as f64 * self.cache_write
            + usage.cache_read as f64 * self.cache_read)
            / 1_000_000.0
    }
}

/// Prices by model name. A dated model (`claude-sonnet-4-5-20250929`) takes the price of
/// the longest name it starts with.
#[derive(Clone, Debug, PartialEq)]
pub struct PriceTable(BTreeMap<String, Price>);

impl Default for PriceTable {
    /// Anthropic's list prices as published in 2025.
    fn default() -> Self {
        let price = |input: f64, output: f64| Price {
            input,
            output,
            cache_write: input * 1.25,
            cache_read: input * 0.1,
        };
        PriceTable(
            [
                ("claude-opus-4-5", price(5.0, 25.0)),
                ("claude-opus-4-1", price(15.0, 75.0)),
                ("claude-opus-4", price(15.0, 75.0)),
                ("claude-sonnet-4-5", price(3.0, 15.0)),
                ("claude-sonnet-4", price(3.0, 15.0)),
                ("claude-haiku-4-5", price(1.0, 5.0)),
                ("claude-3-5-haiku", price(0.8, 4.0)),
            ]
            .into_iter()
            .map(|(name, price)| (name.to_string(), price))
            .collect(),
        )
    }
}

impl PriceTable {
    /// The defaults, with `overrides` added or replacing them.
    pub fn with(mut self, overrides: &BTreeMap<String, Price>) -> Self {
        self.0
            .extend(overrides.iter().map(|(name, price)| (name.clone(), *price)));
        self
    }

    pub fn price(&self, model: &str) -> Option<Price> {
        self.0
            .iter()
            .filter(|(name, _)| model.starts_with(name.as_str()))
            .max_by_key(|(name, _)| name.len())
            .map(|(_, price)| *price)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dated_models_take_the_longest_matching_price() {
        let table = PriceTable::default();
        let usage = TokenUsage {
            input: 1_000_000,
            output: 100_000,
            cache_write: 0,
            cache_read: 1_000_000,
        };
        let sonnet = table.price("claude-sonnet-4-5-20250929").unwrap();
        assert!((sonnet.cost(&usage) - (3.0 + 1.5 + 0.3)).abs() < 1e-9);
        assert_eq!(table.price("claude-opus-4-1-20250805").unwrap().input, 15.0);
        assert_eq!(table.price("llama-3.1-8b"), None);
        let local = BTreeMap::from([(
            "llama".to_string(),
            Price {
                input: 0.0,
                output: 0.0,
                cache_write: 0.0,
                cache_read: 0.0,
            },
        )]);
        assert_eq!(
            table.with(&local).price("llama-3.1-8b").unwrap().output,
            0.0
        );
    }
}
