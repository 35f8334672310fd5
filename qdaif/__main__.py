from qdaif.cli import main

main()
