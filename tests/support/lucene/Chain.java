// The identifiers analysis (agent/analysis.py) run by the Lucene classes Elasticsearch's analysis-common
// module wraps (PatternTokenizer, LowerCaseFilter, TruncateTokenFilter, PatternCaptureGroupTokenFilter,
// and RemoveDuplicatesTokenFilter for `unique` with only_on_same_position), from the jars of the test
// distribution. Documents go into an in-memory index; queries are built as `match` and `match_phrase`
// build them (QueryBuilder over the search analyzer). Input lines on stdin, tab-separated, text in base64:
//   TOKENIZER regex | PART regex | TRUNCATE n | DOC name text | MATCH id text | PHRASE id text | TOKENS id text
// Output: "<id>\t<names or tokens, comma-separated>" per query, in input order.
import java.io.*;
import java.nio.charset.StandardCharsets;
import java.util.*;
import java.util.regex.Pattern;
import org.apache.lucene.analysis.*;
import org.apache.lucene.analysis.miscellaneous.*;
import org.apache.lucene.analysis.pattern.*;
import org.apache.lucene.analysis.tokenattributes.CharTermAttribute;
import org.apache.lucene.document.*;
import org.apache.lucene.index.*;
import org.apache.lucene.search.*;
import org.apache.lucene.store.ByteBuffersDirectory;
import org.apache.lucene.util.QueryBuilder;

public class Chain {
  static Pattern tokenizer;
  static final List<Pattern> parts = new ArrayList<>();
  static int truncate = 1000;

  static Analyzer analyzer(boolean index) {
    return new Analyzer() {
      @Override protected TokenStreamComponents createComponents(String field) {
        Tokenizer t = new PatternTokenizer(tokenizer, 0);
        TokenStream s = new TruncateTokenFilter(new LowerCaseFilter(t), truncate);
        if (index) {
          s = new RemoveDuplicatesTokenFilter(new PatternCaptureGroupTokenFilter(s, true, parts.toArray(new Pattern[0])));
        }
        return new TokenStreamComponents(t, s);
      }
    };
  }

  static String text(String b64) { return new String(Base64.getDecoder().decode(b64), StandardCharsets.UTF_8); }

  public static void main(String[] args) throws Exception {
    BufferedReader in = new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8));
    List<String[]> rows = new ArrayList<>();
    for (String line; (line = in.readLine()) != null; ) {
      String[] f = line.split("\t", -1);
      switch (f[0]) {
        case "TOKENIZER" -> tokenizer = Pattern.compile(text(f[1]));
        case "PART" -> parts.add(Pattern.compile(text(f[1])));
        case "TRUNCATE" -> truncate = Integer.parseInt(f[1]);
        default -> rows.add(f);
      }
    }
    ByteBuffersDirectory dir = new ByteBuffersDirectory();
    try (IndexWriter w = new IndexWriter(dir, new IndexWriterConfig(analyzer(true)))) {
      for (String[] f : rows) {
        if (!f[0].equals("DOC")) continue;
        Document d = new Document();
        d.add(new StringField("name", f[1], Field.Store.YES));
        d.add(new TextField("message", text(f[2]), Field.Store.NO));
        w.addDocument(d);
      }
    }
    Analyzer search = analyzer(false);
    QueryBuilder qb = new QueryBuilder(search);
    PrintStream out = new PrintStream(System.out, true, StandardCharsets.UTF_8);
    try (DirectoryReader r = DirectoryReader.open(dir)) {
      IndexSearcher s = new IndexSearcher(r);
      for (String[] f : rows) {
        List<String> got = new ArrayList<>();
        if (f[0].equals("TOKENS")) {
          try (TokenStream ts = analyzer(true).tokenStream("message", text(f[2]))) {
            CharTermAttribute term = ts.addAttribute(CharTermAttribute.class);
            ts.reset();
            while (ts.incrementToken()) got.add(term.toString());
            ts.end();
          }
        } else if (f[0].equals("MATCH") || f[0].equals("PHRASE")) {
          String q = text(f[2]);
          Query query = f[0].equals("MATCH") ? qb.createBooleanQuery("message", q) : qb.createPhraseQuery("message", q);
          if (query != null) {
            for (ScoreDoc h : s.search(query, 1000).scoreDocs) got.add(s.storedFields().document(h.doc).get("name"));
          }
        } else continue;
        Collections.sort(got);
        out.println(f[1] + "\t" + String.join(",", got));
      }
    }
  }
}
