//! The suite every backend passes, and the differential against the
//! reference model: the same random operations on `MemStore` and on
//! PostgreSQL give the same answers.

use hookgate_store::MemStore;
use hookgate_store::conformance::differential::{ops, transcript};
use proptest::prelude::*;

use super::*;

hookgate_store::conformance_tests!(or_skip!(fresh().await));

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]
    #[test]
    fn postgres_answers_as_the_model_does(ops in ops(40)) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let Some(store) = runtime.block_on(fresh()) else { return Ok(()) };
        let model = runtime.block_on(transcript(&MemStore::on_system_clock(), &ops));
        let postgres = runtime.block_on(transcript(&store, &ops));
        prop_assert_eq!(model, postgres);
    }
}
