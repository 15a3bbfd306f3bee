if __name__ == "__main__":
    # Only when run: worker processes load this module too (anyio runs the parent's main module
    # in each), and need none of the command line's imports.
    from etl.cli import run

    run()
