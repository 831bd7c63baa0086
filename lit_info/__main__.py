"""`python -m lit_info ...` runs the LightningCLI."""

from lit_info.cli import entry

if __name__ == "__main__":
    entry()
