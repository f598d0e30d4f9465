"""Everything shared by train, tune and serve, in rooms by stage of the data flow: data <- registry <- training <-
evaluation (each room imports only rooms to its left), plus console (logging and progress lines). Never imports
stocktrend.tune, stocktrend.serve, the CLI or the quickstart."""
