//! Command-line interface of `pf-baseline` (clap derive; the doc comments are the help).

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "pf-baseline",
    version,
    about = "Random forest and RBF-SVM classifiers of a label on pixels or embeddings (the second seed's baselines)",
    long_about = "Fits a random forest or an RBF-kernel SVM (smartcore) to predict --label from the flattened, \
                  standardised pixels of a `cells` table (e.g. pf-preprocess whole --size 128 --grey, the second \
                  seed's input) or from the features of an `embeddings` table, on the seeded hold-out split that \
                  pf-train classifier uses with the same --label, --hold-out, --test-fraction and --seed. \
                  Writes metrics.parquet (accuracy, balanced accuracy, macro-F1, per-class precision / recall / F1, \
                  confusion counts, majority-class baseline) and class_predictions.parquet into --output.",
    after_long_help = "Examples:\n  \
        pf-baseline --input out/whole.parquet --classifier random-forest --output out/rf\n  \
        pf-baseline --input out/whole.parquet --classifier svm --c 10 --output out/svm\n  \
        pf-baseline --input out/embeddings.parquet --classifier svm --label Metadata_MoA --hold-out compound --output out/svm-moa"
)]
pub struct Cli {
    /// A `cells` table (pixels) or an `embeddings` table (features); repeat for shards.
    #[arg(long, required = true)]
    pub input: Vec<PathBuf>,

    /// Folder to write metrics.parquet and class_predictions.parquet into.
    #[arg(long, alias = "out")]
    pub output: PathBuf,

    #[arg(long, value_enum)]
    pub classifier: ClassifierArg,

    /// The label and the hold-out split (the same flags as pf-train classifier's).
    #[command(flatten)]
    pub split: phenoflow_kit::SplitArgs,

    /// Seed of the split (the same seed as pf-train's gives the same split) and of the forest.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Random forest: number of trees.
    #[arg(long, default_value_t = 100)]
    pub trees: u16,

    /// Random forest: features tried at each split (default √features, scikit-learn's "sqrt").
    #[arg(long)]
    pub max_features: Option<usize>,

    /// Random forest: maximum depth (default: grow until leaves are pure).
    #[arg(long)]
    pub max_depth: Option<u16>,

    /// SVM: regularisation C.
    #[arg(long, default_value_t = 1.0)]
    pub c: f64,

    /// SVM: RBF γ (default 1 / (features · variance) = 1 / features after standardising,
    /// scikit-learn's "scale").
    #[arg(long)]
    pub gamma: Option<f64>,

    #[command(flatten)]
    pub threads: phenoflow_kit::ThreadsArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ClassifierArg {
    RandomForest,
    Svm,
}

impl ClassifierArg {
    pub fn name(self) -> &'static str {
        match self {
            ClassifierArg::RandomForest => "random-forest",
            ClassifierArg::Svm => "svm",
        }
    }
}
