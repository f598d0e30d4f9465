from stocktrend.cli import main

main()
