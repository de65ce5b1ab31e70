"""Operations of the action API: the model, the runner and the operation bodies."""
