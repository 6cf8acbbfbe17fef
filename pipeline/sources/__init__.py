"""Sources: Common Crawl listing and download, WARC reading, the sample crawl mirror."""
