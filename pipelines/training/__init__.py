"""What the train step needs besides the family's recipe: distribution strategies, mixed
precision and XLA (`distribute`), Keras' fixes for those strategies (`keras_fixes`), and the
run folder a finished training publishes (`outputs`)."""
