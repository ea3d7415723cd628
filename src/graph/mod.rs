//! Graph analysis of model descriptions.

pub mod channel_groups;
