from changeproof.cli import main

main()
