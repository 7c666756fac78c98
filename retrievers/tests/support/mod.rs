//! What the integration tests share.
#![allow(dead_code, unreachable_pub)]

pub mod corpus;
pub mod qdrant;
