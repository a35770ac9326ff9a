"""The parts of the champion/challenger cycle (`kerasops.pipelines.steps.retrain`): the
challenger's training and registration (`challenger`), infra-validation of its export
(`infra`), and the cycle's record (`report`)."""
