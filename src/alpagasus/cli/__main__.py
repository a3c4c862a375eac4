from alpagasus.cli import main

main()
