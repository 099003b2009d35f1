// The competition pipeline in a page, against the library alone (no CLI code): train a small
// CIFAR-style network with an "other" class for a wall-clock budget on a Kaggle-style data
// folder, choose where -1 goes on a validation split, rank the test images, write a submission.
//
//   sieve-minimal DATA_FOLDER SUBMISSION.csv [SECONDS=60 | --epochs N]
//
// With SECONDS the schedule is sized to the budget after a timed probe; with --epochs N it spans
// N epochs' steps (the same warmup + cosine to 0), and the result depends on nothing but the data.
//
// What `sieve train --max-minutes M` + `sieve predict` do, minus the run folder, resume,
// MPI and the other ranking methods. Built and run by the test suite (tests/cli/test_minimal.py).
#include <sieve/sieve.hpp>

#include <cstdlib>
#include <iostream>
#include <string>

using namespace sieve;

int main(int argc, char** argv) try {
  const bool by_epochs = argc == 5 && std::string(argv[3]) == "--epochs";
  char* end = nullptr;
  const double seconds = argc == 4 ? std::strtod(argv[3], &end) : 60.0;
  const long long epochs = by_epochs ? std::strtoll(argv[4], &end, 10) : 0;
  const bool number_ok = argc == 3 || (end && *end == '\0' && (by_epochs ? epochs > 0 : seconds > 0.0));
  if (argc < 3 || argc > 5 || (argc == 5 && !by_epochs) || !number_ok) {
    std::cerr << "usage: sieve-minimal DATA_FOLDER SUBMISSION.csv [SECONDS=60 | --epochs N]\n";
    return 2;
  }
  const io::DataFolder df = io::open_data_folder(argv[1]);  // train.csv, train/, outside/, test/
  const std::size_t K = df.classes.size();

  // Validation: 10% of each class plus outside images making up 30%; the other outside images
  // train the "other" class (an empty label list is an all-zero target).
  const train::TrainSplit split = train::make_split(df, {.seed = 0, .negatives = true});
  std::vector<io::FileSample> tr, va;
  for (auto i : split.train) tr.push_back(df.train[i]);
  for (auto i : split.negatives) tr.push_back({df.outside[i].id, df.outside[i].path, {-1}});
  for (auto i : split.val) va.push_back(df.train[i]);
  for (auto i : split.val_outside) va.push_back({df.outside[i].id, df.outside[i].path, {-1}});
  const io::FileDataset train_ds(tr), val_ds(va), test_ds(df.test);

  // Input at the images' own size, gray, normalised with the training images' statistics.
  const io::ImageStats st = io::image_stats(train_ds);
  const auto mean = static_cast<float>(st.gray_mean), sd = static_cast<float>(st.gray_std);
  const augment::InputSpec input{std::max(st.max_height, st.max_width), augment::FitMode::pad, 1,
                                 {mean, mean, mean}, {sd, sd, sd}};

  // 16-32-64-128 channels, global max pool, a head of K classes + "other".
  nn::Classifier<float> model(nn::Backbone<float>(nn::PoolNet<float>({16, 3, 1, true}, 0)), K + 1, 0.0, 0, 0);
  loss::OtherClassCrossEntropyLoss<float> loss(/*label_smoothing*/ 0.1);
  optim::Sgd<float> opt(model.params(), {.momentum = 0.9, .weight_decay = 5e-4, .nesterov = true});
  optim::PlannedWarmupCosineLR schedule{.base = 0.2};  // sized to the budget after a timed probe, or:

  io::Loader<augment::InputTransform> loader(train_ds, augment::train_input_transform(input, 2, 0.5),
                                             {.batch_size = 256, .workers = 2, .seed = 0});
  train::SequentialLoaderAdapter batches(loader, [K](io::Batch&& b) {
    Tensor2f y = io::multi_hot(b, K);
    return train::XY<Tensor4f, Tensor2f>{std::move(b.images), std::move(y)};
  });
  train::TrainerOptions options;
  if (by_epochs) {
    const std::int64_t total = epochs * batches.num_batches(0);
    schedule = schedule.with_plan(0, schedule.warmup_for(0, total), total);
    options.epochs = epochs;
  } else {
    options.budget = train::TimeBudget{.seconds = seconds};
  }
  train::Trainer trainer(model, loss, opt, schedule, options);
  const train::FitResult fit = trainer.fit(batches);

  // -1 goes where validation MAP@5 is best: among classes by log(p_class / p_other).
  const auto views = augment::tta_views("flip");
  const retrieval::Embedded val = retrieval::embed_dataset(model, val_ds, input, views);
  const Tensor2f no_gallery = Tensor2f::from_shape({0, 128});
  const retrieval::GalleryRef gallery{no_gallery, {}};
  const auto head = retrieval::HeadKind::softmax_other;
  const retrieval::MethodCalibration cal = retrieval::calibrate(retrieval::Method::head, val, gallery, K, head);

  const retrieval::Embedded test = retrieval::embed_dataset(model, test_ds, input, views);
  const Tensor2f scores = retrieval::method_scores(retrieval::Method::head, test, gallery, K, head);
  const auto ranked = retrieval::rank_with_threshold(scores, cal.threshold);  // -1 inserted
  const auto labels = retrieval::ranked_label_strings(ranked, df.classes);
  std::vector<io::SubmissionRow> rows;
  for (std::size_t i = 0; i < labels.size(); ++i) rows.push_back({test.ids[i], labels[i]});
  io::write_submission(argv[2], rows);
  std::cout << "sieve-minimal: " << fit.steps << " steps, validation MAP@5 " << cal.val_map5 << " at threshold "
            << cal.threshold << "; " << rows.size() << " rows written to " << argv[2] << "\n";
  return 0;
} catch (const std::exception& e) {
  std::cerr << "sieve-minimal: " << e.what() << "\n";
  return 1;
}
