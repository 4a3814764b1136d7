//! # Sluice semantic cache (in progress)
//!
//! Will answer repeated and paraphrased prompts from Redis. So far:
//! - [`exact_key`]: the key for requests that must get the same answer;
//! - [`same_question`]: the paraphrase guard, which decides whether two prompts that embed
//!   close together really ask the same thing.

pub mod exact_key;
pub mod same_question;
