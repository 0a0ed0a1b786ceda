//! Request validation. Every violation becomes INVALID_ARGUMENT whose message starts with the
//! field path (`items[2].quantity: …`) and shows the offending value, so a caller can fix the
//! request without reading our code.

use lab_proto::shop::v1::LineItem;
use tonic::Status;

pub const MAX_ID_LEN: usize = 64;
pub const MAX_KEY_LEN: usize = 128;
pub const MAX_ITEMS: usize = 50;
pub const MAX_QUANTITY: i32 = 1000;

/// The value as shown in an error: quoted, and cut short when long.
fn shown(value: &str) -> String {
    const MAX: usize = 40;
    if value.chars().count() <= MAX {
        format!("{value:?}")
    } else {
        let head: String = value.chars().take(MAX).collect();
        format!("{head:?}… ({} characters)", value.chars().count())
    }
}

pub fn invalid(field: &str, problem: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{field}: {problem}"))
}

/// A required identifier of 1..=`max` printable ASCII characters without spaces.
pub fn id(field: &str, value: &str, max: usize) -> Result<(), Status> {
    if value.is_empty() {
        return Err(invalid(field, "is required"));
    }
    if value.len() > max {
        return Err(invalid(
            field,
            format!("must be at most {max} characters, got {}", shown(value)),
        ));
    }
    if !value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-'))
    {
        return Err(invalid(
            field,
            format!("may hold only A-Z a-z 0-9 . _ : -, got {}", shown(value)),
        ));
    }
    Ok(())
}

/// An idempotency key: 1..=128 characters of `[A-Za-z0-9._:-]`.
pub fn idempotency_key(field: &str, value: &str) -> Result<(), Status> {
    id(field, value, MAX_KEY_LEN)
}

/// Line items: 1..=50 of them, each with a product id and a quantity in 1..=1000, and at
/// most 1000 of one product over all its lines (repeating a product cannot bypass the cap).
pub fn line_items(field: &str, items: &[LineItem]) -> Result<(), Status> {
    if items.is_empty() {
        return Err(invalid(field, "at least one item is required"));
    }
    if items.len() > MAX_ITEMS {
        return Err(invalid(
            field,
            format!("at most {MAX_ITEMS} items, got {}", items.len()),
        ));
    }
    for (i, item) in items.iter().enumerate() {
        id(
            &format!("{field}[{i}].product_id"),
            &item.product_id,
            MAX_ID_LEN,
        )?;
        if !(1..=MAX_QUANTITY).contains(&item.quantity) {
            return Err(invalid(
                &format!("{field}[{i}].quantity"),
                format!(
                    "must be between 1 and {MAX_QUANTITY}, got {}",
                    item.quantity
                ),
            ));
        }
    }
    for merged in merged_items(items) {
        if merged.quantity > MAX_QUANTITY {
            let lines: Vec<String> = items
                .iter()
                .enumerate()
                .filter(|(_, i)| i.product_id == merged.product_id)
                .map(|(n, _)| format!("{field}[{n}]"))
                .collect();
            return Err(invalid(
                field,
                format!(
                    "at most {MAX_QUANTITY} of one product, got {} of {} over {}",
                    merged.quantity,
                    shown(&merged.product_id),
                    lines.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// The items with the lines of one product merged into one, in product id order: the
/// canonical form of an order's items (what a reuse of its idempotency key must repeat).
/// Quantities saturate instead of overflowing; [`line_items`] bounds them.
pub fn merged_items(items: &[LineItem]) -> Vec<LineItem> {
    let mut merged: Vec<LineItem> = Vec::with_capacity(items.len());
    for item in items {
        match merged.iter_mut().find(|m| m.product_id == item.product_id) {
            Some(m) => m.quantity = m.quantity.saturating_add(item.quantity),
            None => merged.push(item.clone()),
        }
    }
    merged.sort_by(|a, b| a.product_id.cmp(&b.product_id));
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(p: &str, q: i32) -> LineItem {
        LineItem {
            product_id: p.into(),
            quantity: q,
        }
    }

    #[test]
    fn messages_name_the_field_and_value() {
        let e = line_items("items", &[item("sku-1", 1), item("sku-2", -3)]).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            e.message(),
            "items[1].quantity: must be between 1 and 1000, got -3"
        );
        let e = line_items("items", &[]).unwrap_err();
        assert!(e.message().starts_with("items: "), "{}", e.message());
        let e = idempotency_key("idempotency_key", "").unwrap_err();
        assert_eq!(e.message(), "idempotency_key: is required");
        let long = "k".repeat(500);
        let e = idempotency_key("idempotency_key", &long).unwrap_err();
        assert!(e.message().contains("at most 128"), "{}", e.message());
        assert!(e.message().contains("(500 characters)"), "{}", e.message());
        let e = id("customer_id", "a b", 64).unwrap_err();
        assert!(
            e.message().starts_with("customer_id: may hold only"),
            "{}",
            e.message()
        );
        assert!(line_items("items", &[item("sku-1", 1000)]).is_ok());
        let many: Vec<_> = (0..51).map(|_| item("sku-1", 1)).collect();
        assert!(
            line_items("items", &many)
                .unwrap_err()
                .message()
                .contains("got 51")
        );
    }

    #[test]
    fn repeated_products_are_merged_and_capped_over_all_their_lines() {
        let items = [item("sku-2", 3), item("sku-1", 600), item("sku-2", 4)];
        assert_eq!(
            merged_items(&items),
            vec![item("sku-1", 600), item("sku-2", 7)]
        );
        assert!(line_items("items", &items).is_ok());
        let over = [item("sku-1", 600), item("sku-2", 1), item("sku-1", 600)];
        let e = line_items("items", &over).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert_eq!(
            e.message(),
            "items: at most 1000 of one product, got 1200 of \"sku-1\" over items[0], items[2]"
        );
    }
}
