//! How phenoflow scores a supervised classifier, shared by `pf-train classifier` and
//! `pf-baseline` so that both train and score on exactly the same rows: the label and the seeded
//! hold-out split ([`classification`]), the evaluation and the `metrics` / `class_predictions`
//! tables it is written as, and the seeded shuffles every split and batch order draws from
//! ([`seeded`]). Not contract (the tables are `phenoflow-schemas`'), so kept out of it; light
//! (Arrow and the contract crate).

pub mod classification;
pub mod seeded;
