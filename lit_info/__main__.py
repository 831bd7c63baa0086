"""`python -m lit_info ...` runs the LightningCLI."""

from lit_info.cli import main

if __name__ == "__main__":
    main()
