//! Generated gRPC code for the lab: `shop::v1` (Gateway, Orders, Inventory, Payments,
//! Notifications) and `lab::v1` (Faults, Audit), plus the encoded descriptor set that
//! server reflection serves. The generated code comes from `proto/` at build time; edit the
//! `.proto` files, not this crate. Beside it, the gRPC names every crate above shares:
//! [`names`] (service names) and [`codes`] (status codes by their canonical names).

pub mod codes;

pub mod shop {
    pub mod v1 {
        tonic::include_proto!("shop.v1");
    }
}

pub mod lab {
    pub mod v1 {
        tonic::include_proto!("lab.v1");
    }
}

/// The encoded `FileDescriptorSet` of every proto file, for tonic-reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/descriptor.bin"));

/// Fully qualified gRPC service names, as health checks and reflection use them.
pub mod names {
    pub const GATEWAY: &str = "shop.v1.Gateway";
    pub const ORDERS: &str = "shop.v1.Orders";
    pub const INVENTORY: &str = "shop.v1.Inventory";
    pub const PAYMENTS: &str = "shop.v1.Payments";
    pub const NOTIFICATIONS: &str = "shop.v1.Notifications";
    pub const AUDIT: &str = "lab.v1.Audit";
    pub const FAULTS: &str = "lab.v1.Faults";
}
